"""The run's TensorBoard writer, and its HParams dashboard."""

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.tensorboard.summary import hparams as hparams_summary


def tensorboard(trainer: L.Trainer):
    """The SummaryWriter of the trainer's TensorBoardLogger, or None when there is none."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def epoch_step(trainer: L.Trainer) -> int:
    """The x value of what a callback logs at an epoch's end: the last finished training step, where Lightning
    files the epoch's scalars (val/loss...), so images and histograms line up with the curves."""
    return max(trainer.global_step - 1, 0)


INCLUDE = ("model", "optimizer", "scheduler", "data", "seed", "trainer.max_epochs", "trainer.precision")
LEAVE_OUT = ("root", "path", "download", "on_device", "num_workers", "foreach", "fused", "compile", "compile_mode")
DEFINES_MODEL = ("model", "optimizer", "scheduler")  # columns shown first, beside the ones a sweep varies


class HParams(L.Callback):
    """Write the run's hyperparameters to TensorBoard's HParams dashboard, with ``val/loss`` as its metric.

    The values come from the run's composed config (``pl_module.run_config``), flattened to dotted keys,
    limited to the sections in ``include`` and without paths and switches that do not change the result
    (``data.root``, ``data.download``, ``optimizer.fused``...). Each run writes its session (values at the
    start, status at the end); TensorBoard then lists first the columns whose values differ between the
    runs it shows. When a sweep ends, ``write_sweep_experiment`` also puts the swept and model-defining
    settings first. The dashboard reads the real ``val/loss`` scalars the run logs.
    """

    def __init__(self, include=INCLUDE, metrics=("val/loss",)):
        self.include, self.metrics = tuple(include), tuple(metrics)

    def params(self, config: dict) -> dict:
        return hparams_of(config, self.include)

    @rank_zero_only
    def on_fit_start(self, trainer, pl_module):
        writer = tensorboard(trainer)
        if writer is None or not pl_module.run_config:
            return
        _, session_start, _ = hparams_summary(self.params(pl_module.run_config), {m: 0.0 for m in self.metrics})
        writer.file_writer.add_summary(session_start)

    @rank_zero_only
    def on_fit_end(self, trainer, pl_module):
        writer = tensorboard(trainer)
        if writer is not None and pl_module.run_config:
            writer.file_writer.add_summary(hparams_summary({}, {})[2])  # the session ended (status: success)
            writer.flush()


def hparams_of(config: dict, include=INCLUDE) -> dict:
    """The config's hyperparameters as flat {dotted key: int | float | str | bool}, without paths and switches."""
    chosen = {}
    for key in include:
        section, _, sub = key.partition(".")
        if section in config and (not sub or (isinstance(config[section], dict) and sub in config[section])):
            value = config[section][sub] if sub else config[section]
            chosen.update(flatten(value, f"{key}.") if isinstance(value, dict) else {key: value})
    return {
        k: v if isinstance(v, (int, float, str, bool)) else str(v)
        for k, v in chosen.items()
        if not k.rsplit(".", 1)[-1].startswith(LEAVE_OUT)
    }


def write_sweep_experiment(sweep_dir, job_configs: list[dict], metrics=("val/loss", "test/loss")) -> dict:
    """The HParams dashboard's columns for a whole sweep, written into ``sweep_dir``: the settings the jobs
    vary and those that define the model first, then the rest (TensorBoard lists columns marked as differing
    first, each part by name). Returns {key: shown first}."""
    from tensorboard.plugins.hparams import plugin_data_pb2
    from torch.utils.tensorboard import SummaryWriter

    params = [hparams_of(c) for c in job_configs]
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


CLASS_SHOWN = ("net.", "prior.", "posterior.")


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"model": {"loss": "bce"}} -> {"model.loss": "bce"}; drops Hydra's ``_target_`` keys, except that the
    class of the model, its parts, the optimizer and the scheduler shows as ``model`` (e.g. IWAE), ``model.net``
    (MLPNet), ``model.prior``, ``model.posterior``, ``optimizer``, ``scheduler``."""
    flat = {}
    for key, value in tree.items():
        if key == "_target_" and (prefix.endswith(CLASS_SHOWN) or prefix in ("model.", "optimizer.", "scheduler.")):
            flat[prefix[:-1]] = str(value).rsplit(".", 1)[-1]
        if str(key).startswith("_"):
            continue
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
