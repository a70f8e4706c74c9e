"""Entry point: ``python -m vae_lightning.train [overrides]`` (Hydra; ``-m`` for sweeps)."""

import math
import os
import sys
import time
import traceback
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from vae_lightning.checkpoint_io import AtomicCheckpointIO
from vae_lightning.config import checkpoint_to_resume, validate
from vae_lightning.errors import UserError, exit_with
from vae_lightning.files import write_json
from vae_lightning.resolvers import register_resolvers
from vae_lightning.summarize import error_line, write_run_info

register_resolvers()


def build(cfg: DictConfig, resume_step: int | None = None):
    """DataModule, LightningModule and Trainer from the composed config.

    ``resume_step``: TensorBoard hides what an interrupted run logged from this step on, so a
    resumed run's curves continue without duplicates.
    """
    datamodule = instantiate(cfg.data)
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    model = instantiate(
        cfg.model,
        input_shape=datamodule.image_shape,
        data_range=datamodule.data_range,
        optimizer=instantiate(cfg.optimizer),
        scheduler=scheduler,
    )
    model.run_config = OmegaConf.to_container(cfg, resolve=True)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    loggers = [
        instantiate(c, **({"purge_step": resume_step} if resume_step and "TensorBoard" in c._target_ else {}))
        for c in (cfg.get("logger") or {}).values()
        if c
    ]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()])
    return datamodule, model, trainer


def hparams(config: dict) -> dict:
    """The settings that define a run's result (no paths that change from run to run)."""
    keep = {k: config.get(k) for k in ("seed", "model", "optimizer", "scheduler", "data")}
    keep["trainer"] = {k: v for k, v in config["trainer"].items() if k not in ("_target_", "default_root_dir")}
    return keep


def train(cfg: DictConfig) -> dict:
    """Validate, train, test; write ``metrics.json`` in the run folder; return the final metrics."""
    validate(cfg)
    ckpt_path = checkpoint_to_resume(cfg)
    step = None
    if cfg.get("resume"):
        step = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)["global_step"]
    L.seed_everything(cfg.seed, workers=True)
    datamodule, model, trainer = build(cfg, resume_step=step)
    datamodule.prepare_data()  # fail fast on missing data, before the trainer starts
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}  # last epoch's train/ and val/
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if best:
        metrics["best/val_loss"] = float(trainer.checkpoint_callback.best_model_score)
    if cfg.get("test"):
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, verbose=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
    if trainer.is_global_zero:
        write_json(
            Path(cfg.paths.output_dir) / "metrics.json",
            {
                "metrics": metrics,
                "epochs": trainer.current_epoch,
                "global_step": trainer.global_step,
                "best_checkpoint": Path(best).name if best else None,
                "hparams": hparams(model.run_config),
            },
        )
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    started, run_dir = time.perf_counter(), HydraConfig.get().runtime.output_dir
    try:
        metrics = train(cfg)
    except Exception as e:
        write_run_info(run_dir, time.perf_counter() - started, e)
        if HydraConfig.get().mode == RunMode.MULTIRUN and os.environ.get("HYDRA_FULL_ERROR") != "1":
            return failed_job(e)
        if not isinstance(e, UserError):
            raise
        exit_with(e)
    write_run_info(run_dir, time.perf_counter() - started)
    metric = cfg.get("optimized_metric")
    return metrics.get(metric) if metric else None


def failed_job(error: Exception) -> float:
    """In a sweep, one failed job must not stop the others: report it, return NaN to the sweeper.

    Its row in the sweep's summary shows the error line (from run_info.json).
    """
    print(f"error: {error_line(error)}", file=sys.stderr)
    if not isinstance(error, UserError):
        traceback.print_exc()
    return math.nan


if __name__ == "__main__":
    main()
