"""The run's TensorBoard writer, and its HParams dashboard."""

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


def epoch_step(trainer: L.Trainer) -> int:
    """The x value of what a callback logs at an epoch's end: the last finished training step, where
    Lightning files the epoch's scalars (val/loss...), so images and histograms line up with the
    curves."""
    return max(trainer.global_step - 1, 0)


# columns shown first, beside the ones a sweep varies
DEFINES_MODEL = ("model", "optimizer", "scheduler")


class HParams(L.Callback):
    """Write the run's hyperparameters to TensorBoard's HParams dashboard, with ``val/loss`` as its
    metric.

    The values are the settings that define the run's result (``runs.record.result_settings`` of
    ``pl_module.run_config``: no paths or switches such as ``data.root``, ``optimizer.fused``). Each
    run writes its session (values at the start, status at the end); TensorBoard then lists first
    the columns whose values differ between the runs it shows. When a sweep ends,
    ``write_sweep_experiment`` also puts the swept and model-defining settings first. The dashboard
    reads the real ``val/loss`` scalars the run logs.
    """

    def __init__(self, metrics=("val/loss",)):
        self.metrics = tuple(metrics)

    @rank_zero_only
    def on_fit_start(self, trainer, pl_module):
        writer = tensorboard(trainer)
        if writer is None or not pl_module.run_config:
            return
        _, session_start, _ = hparams_summary(
            hparams_of(result_settings(pl_module.run_config)), {m: 0.0 for m in self.metrics}
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


def write_sweep_experiment(
    sweep_dir, job_settings: list[dict], metrics=("val/loss", "test/loss")
) -> dict:
    """The HParams dashboard's columns for a whole sweep, written into ``sweep_dir``: the settings
    the jobs vary and those that define the model first, then the rest (TensorBoard lists columns
    marked as differing first, each part by name). Returns {key: shown first}."""
    from tensorboard.plugins.hparams import plugin_data_pb2
    from torch.utils.tensorboard import SummaryWriter

    params = [hparams_of(s) for s in job_settings]  # each job's metrics.json hparams
    keys = list(dict.fromkeys(k for p in params for k in p))
    if not keys:
        return {}
    varies = {k for k in keys if len({repr(p.get(k)) for p in params}) > 1}
    first = {k: k in varies or k.split(".", 1)[0] in DEFINES_MODEL for k in keys}
    union = {k: next(p[k] for p in params if k in p) for k in keys}
    experiment, _, _ = hparams_summary(union, {m: 0.0 for m in metrics})
    value = experiment.value[0]
    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
    for info in data.experiment.hparam_infos:
        info.differs = first[info.name]
    value.metadata.plugin_data.content = data.SerializeToString()
    with SummaryWriter(log_dir=str(sweep_dir)) as writer:
        writer.file_writer.add_summary(experiment)
    return first
