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

from vae_lightning.errors import (
    UserError,
    check_bool,
    check_float,
    check_int,
    exit_with,
    instantiate_component,
    settings_of,
)
from vae_lightning.files import write_json
from vae_lightning.resolvers import register_resolvers
from vae_lightning.runs.checkpoints import AtomicCheckpointIO
from vae_lightning.summarize import error_line, write_run_info

register_resolvers()


def check_run_settings(cfg: DictConfig) -> None:
    """The settings this entry point owns, and those of the components it does not (torch's optimizer,
    Lightning's Trainer). Our own components (data, model, network) check theirs in their constructors."""
    check_int("seed", cfg.get("seed"), example=42)
    check_bool("resume", cfg.get("resume", False))
    check_float("optimizer.lr", OmegaConf.select(cfg, "optimizer.lr"), low=0, low_ok=False, example="1e-3")
    check_int("trainer.max_epochs", OmegaConf.select(cfg, "trainer.max_epochs"), low=-1, example=50,
              note=" (-1 trains until stopped)")


def checkpoint_to_resume(cfg: DictConfig) -> str | None:
    """``ckpt_path``, or with ``resume=true`` this run folder's ``checkpoints/last.ckpt``; UserError if missing."""
    path = cfg.get("ckpt_path")
    if cfg.get("resume"):
        if path:
            raise UserError(f"resume=true continues this run folder's last.ckpt, ckpt_path={path} another: drop one of them")
        last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        if not last.is_file():
            raise UserError(f"resume=true but {last} does not exist: add hydra.run.dir=<the folder of the run to continue>")
        return str(last)
    if path and not Path(str(path)).is_file():
        raise UserError(f"ckpt_path={path} is not a file: point it at a checkpoint, e.g. <run>/checkpoints/last.ckpt")
    return path


def build_components(cfg: DictConfig):
    """DataModule and LightningModule from the config, each checking its own settings as it is built (no data
    is read): the model takes its image shape and pixel range from the data."""
    datamodule = instantiate_component(cfg.data, "data")
    scheduler = instantiate_component(cfg.scheduler, "scheduler") if cfg.get("scheduler") else None
    model = instantiate_component(
        cfg.model,
        "model",
        input_shape=datamodule.image_shape,
        data_range=datamodule.data_range,
        optimizer=instantiate_component(cfg.optimizer, "optimizer"),
        scheduler=scheduler,
    )
    return datamodule, model


def build(cfg: DictConfig, resume_step: int | None = None):
    """DataModule, LightningModule and Trainer from the composed config.

    ``resume_step``: TensorBoard hides what an interrupted run logged from this step on, so a
    resumed run's curves continue without duplicates.
    """
    datamodule, model = build_components(cfg)
    model.run_config = OmegaConf.to_container(cfg, resolve=True)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    loggers = [
        instantiate(c, **({"purge_step": resume_step} if resume_step and "TensorBoard" in c._target_ else {}))
        for c in (cfg.get("logger") or {}).values()
        if c
    ]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()])
    return datamodule, model, trainer


def fit_progress(trainer: L.Trainer) -> tuple[int, int, str, float | None]:
    """(epochs, global step, best checkpoint path, its val/loss) of the fit that just ended.

    Under a spawning strategy (``trainer=ddp``) the ranks trained, not this process, whose trainer kept
    no count: then they come from the last checkpoint rank zero wrote (the checkpoint is the record).
    """
    cb = trainer.checkpoint_callback
    epochs, step = trainer.current_epoch, trainer.global_step
    best = cb.best_model_path if cb else ""
    score = cb.best_model_score if cb else None
    last = Path(cb.dirpath) / "last.ckpt" if cb and cb.dirpath else None
    if step == 0 and last is not None and last.is_file():
        ckpt = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
        epochs, step = ckpt["epoch"] + 1, ckpt["global_step"]
        state = ckpt.get("callbacks", {}).get(cb.state_key, {})
        best, score = state.get("best_model_path") or best, state.get("best_model_score", score)
    return epochs, step, best, None if score is None else float(score)


def hparams(config: dict) -> dict:
    """The settings that define a run's result (no paths that change from run to run)."""
    keep = {k: config.get(k) for k in ("seed", "model", "optimizer", "scheduler", "data")}
    keep["trainer"] = {k: v for k, v in config["trainer"].items() if k not in ("_target_", "default_root_dir")}
    return keep


def train(cfg: DictConfig) -> dict:
    """Check, train, test; write ``metrics.json`` in the run folder; return the final metrics."""
    check_run_settings(cfg)
    ckpt_path = checkpoint_to_resume(cfg)
    step = None
    if cfg.get("resume"):
        step = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)["global_step"]
    L.seed_everything(cfg.seed, workers=True)
    datamodule, model, trainer = build(cfg, resume_step=step)
    with settings_of("data"):
        datamodule.prepare_data()  # fail fast on missing or bad data, before the trainer starts
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}  # last epoch's train/ and val/
    epochs, global_step, best, best_score = fit_progress(trainer)
    if best_score is not None:
        metrics["best/val_loss"] = best_score
    if cfg.get("test"):
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, verbose=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
    if trainer.is_global_zero:
        write_json(
            Path(cfg.paths.output_dir) / "metrics.json",
            {
                "metrics": metrics,
                "epochs": epochs,
                "global_step": global_step,
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
