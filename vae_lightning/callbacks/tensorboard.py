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


class HParams(L.Callback):
    """Write the run's hyperparameters to TensorBoard's HParams dashboard, with ``val/loss`` as its metric.

    The values come from the run's composed config (``pl_module.run_config``), flattened to
    dotted keys and limited to the sections in ``include``. Lightning's own ``log_hyperparams``
    can only attach a metric by logging a placeholder value for it; here the dashboard reads
    the real ``val/loss`` scalars the run logs.
    """

    def __init__(self, include=("model", "optimizer", "scheduler", "data", "seed"), metrics=("val/loss",)):
        self.include, self.metrics = tuple(include), tuple(metrics)

    def params(self, config: dict) -> dict:
        flat = flatten({k: config[k] for k in self.include if k in config})
        return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flat.items()}

    @rank_zero_only
    def on_fit_start(self, trainer, pl_module):
        writer = tensorboard(trainer)
        if writer is None or not pl_module.run_config:
            return
        for summary in hparams_summary(self.params(pl_module.run_config), {m: 0.0 for m in self.metrics}):
            writer.file_writer.add_summary(summary)


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"model": {"loss": "bce"}} -> {"model.loss": "bce"}; drops Hydra's ``_target_`` keys, except that a
    network's class shows as ``model.net`` (e.g. MLPNet): it defines the model."""
    flat = {}
    for key, value in tree.items():
        if key == "_target_" and prefix.endswith("net."):
            flat[prefix[:-1]] = str(value).rsplit(".", 1)[-1]
        if str(key).startswith("_"):
            continue
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
