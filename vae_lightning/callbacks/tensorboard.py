"""The run's TensorBoard writer, and its HParams dashboard."""

from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.tensorboard.summary import hparams as hparams_summary

from vae_lightning.runs.record import result_settings


def tensorboard(trainer: L.Trainer):
    """The SummaryWriter of the trainer's TensorBoardLogger, or None when there is none."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


class HParams(L.Callback):
    """Write the run's hyperparameters to TensorBoard's HParams dashboard, with ``val/loss`` as its
    metric.

    The values are the settings that define the run's result (``runs.record.result_settings`` of
    ``pl_module.run_config``: no paths or switches such as ``data.root``, ``optimizer.fused``). Each
    run writes its session (values at the start, status at the end) under the name ``trial`` (the
    table's first column; default: the run's TensorBoard folder). When a sweep ends,
    ``write_sweep_experiment`` lists the settings the sweep varied as the table's columns. The
    dashboard reads the real ``val/loss`` scalars the run logs.
    """

    def __init__(self, metrics=("val/loss",), trial: str = ""):
        self.metrics, self.trial = tuple(metrics), str(trial or "")

    @rank_zero_only
    def on_fit_start(self, trainer, pl_module):
        writer = tensorboard(trainer)
        if writer is None or not pl_module.run_config:
            return
        _, session_start, _ = hparams_summary(
            hparams_of(result_settings(pl_module.run_config)), {m: 0.0 for m in self.metrics}
        )
        if self.trial:
            edit_plugin_data(
                session_start, lambda d: setattr(d.session_start_info, "group_name", self.trial)
            )
        writer.file_writer.add_summary(session_start)

    @rank_zero_only
    def on_fit_end(self, trainer, pl_module):
        writer = tensorboard(trainer)
        if writer is not None and pl_module.run_config:
            # the session ended (status: success)
            writer.file_writer.add_summary(hparams_summary({}, {})[2])
            writer.flush()


def hparams_of(settings: dict) -> dict:
    """Flat settings as TensorBoard's types: int, float, str, bool (lists and None as text)."""
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in settings.items()}


def edit_plugin_data(summary, edit) -> None:
    """Change the HParams plugin's message inside a summary (torch's ``hparams`` sets no session
    name and marks nothing as differing)."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    value = summary.value[0]
    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
    edit(data)
    value.metadata.plugin_data.content = data.SerializeToString()


def write_sweep_experiment(
    sweep_dir, job_settings: list[dict], metrics=("val/loss", "test/loss")
) -> list[str]:
    """The HParams dashboard's columns for a whole sweep, written into ``sweep_dir`` (in place of an
    earlier list there): the settings whose values differ between the jobs, and the metrics.

    TensorBoard shows the first five columns of the list and hides the others until ticked, so
    settings every job shares would push what the sweep varies out of view: they are left out of
    the list (``summary.md`` and each job's ``metrics.json`` have them). When no setting differs,
    all are listed. Returns the listed settings."""
    from torch.utils.tensorboard import SummaryWriter

    params = [hparams_of(s) for s in job_settings]  # each job's metrics.json hparams
    keys = list(dict.fromkeys(k for p in params for k in p))
    if not keys:
        return []
    varies = [k for k in keys if len({repr(p.get(k)) for p in params}) > 1]
    shown = sorted(varies) or keys
    union = {k: next(p[k] for p in params if k in p) for k in shown}
    experiment, _, _ = hparams_summary(union, {m: 0.0 for m in metrics})

    def mark(data):
        for info in data.experiment.hparam_infos:
            info.differs = info.name in varies

    edit_plugin_data(experiment, mark)
    for old in Path(sweep_dir).glob("events.out.tfevents.*"):  # the list of an earlier summary
        old.unlink()
    with SummaryWriter(log_dir=str(sweep_dir)) as writer:
        writer.file_writer.add_summary(experiment)
    return shown
