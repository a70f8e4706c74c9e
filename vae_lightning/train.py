"""Entry point: ``python -m vae_lightning.train [overrides]`` (Hydra; ``-m`` for sweeps)."""

import json
import math
import sys
import time
import traceback
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from vae_lightning import boundary
from vae_lightning.callbacks.guards import SIGTERM_EXIT, stops_reach_ranks
from vae_lightning.callbacks.threads import flush_denormals
from vae_lightning.errors import UserError, exit_with, settings_of
from vae_lightning.files import write_json
from vae_lightning.resolvers import register_resolvers
from vae_lightning.runs.build import build_run, say_held, take_built
from vae_lightning.runs.checkpoints import readable_checkpoint
from vae_lightning.runs.folder import LOCK, lock
from vae_lightning.runs.record import error_line, result_settings, write_run_info
from vae_lightning.runs.report import log_lightning_to_files, show_config, show_summary

register_resolvers()


def fit_progress(trainer: L.Trainer) -> tuple[int, int, str, float | None]:
    """(epochs, global step, best checkpoint path, its val/loss) of the fit that just ended.

    Under a spawning strategy (``trainer=ddp``) the ranks trained, not this process, whose trainer
    kept no count: then they come from the last checkpoint rank zero wrote (the checkpoint is the
    record).
    """
    cb = trainer.checkpoint_callback
    epochs, step = trainer.current_epoch, trainer.global_step
    best = cb.best_model_path if cb else ""
    score = cb.best_model_score if cb else None
    last = Path(cb.dirpath) / "last.ckpt" if cb and cb.dirpath else None
    ckpt = (
        readable_checkpoint(last)[0] if step == 0 and last is not None and last.is_file() else None
    )
    if ckpt is not None:
        epochs, step = ckpt["epoch"] + 1, ckpt["global_step"]
        state = ckpt.get("callbacks", {}).get(cb.state_key, {})
        best, score = state.get("best_model_path") or best, state.get("best_model_score", score)
    return epochs, step, best, None if score is None else float(score)


def best_key(trainer: L.Trainer) -> str:
    """The record's name for the best checkpoint's score: best/val_loss by default."""
    monitor = getattr(trainer.checkpoint_callback, "monitor", None) or "val/loss"
    return "best/" + monitor.replace("/", "_")


def read_record(run_dir: Path) -> dict | None:
    """The run folder's metrics.json when it is readable, else None."""
    try:
        record = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("metrics"), dict) else None


def finished_fit(cfg: DictConfig, run_dir: Path) -> dict | None:
    """resume=true on a run whose fit already reached trainer.max_epochs: its record (metrics.json),
    kept as it is."""
    record = read_record(run_dir) if cfg.get("resume") else None
    epochs, max_epochs = (record or {}).get("epochs"), cfg.trainer.max_epochs
    if not isinstance(epochs, int) or max_epochs == -1 or epochs < max_epochs:
        return None  # no record (or a damaged one): the fit goes on, and writes it anew
    return record


def train(cfg: DictConfig) -> dict:
    """Check, train, test; write ``metrics.json`` in the run folder after the fit and again after
    the test (a fault during the test keeps the fit's record); return the final metrics.

    ``resume=true`` on a run whose fit is complete trains nothing: it only runs the test pass that
    is missing (a run killed during it); ``hydra_main`` answers a complete run without calling
    this."""
    started = time.perf_counter()
    log_lightning_to_files()
    # a single run was built before its folder was made (runs/build.py)
    run = take_built() or build_run(cfg)
    datamodule, model, trainer, ckpt_path = run.datamodule, run.model, run.trainer, run.ckpt_path
    run_dir = Path(cfg.paths.output_dir)
    say_held(run)
    if trainer.is_global_zero and cfg.get("print_config", True):
        show_config(cfg, cfg.paths.output_dir)
    with settings_of("data"):
        datamodule.prepare_data()  # missing or damaged files: one line naming the file
    # resume=true after a fault during the test pass: only the test is left
    record = finished_fit(cfg, run_dir)
    if record is None:
        record = fit(cfg, trainer, model, datamodule, ckpt_path)
    metrics, best = record["metrics"], record["best_checkpoint"]
    cb = trainer.checkpoint_callback
    best_path = (
        str(Path(cb.dirpath if cb and cb.dirpath else run_dir / "checkpoints") / best)
        if best
        else None
    )
    if cfg.get("test"):
        with stops_reach_ranks(trainer):
            trainer.test(model, datamodule=datamodule, ckpt_path=best_path, verbose=False)
        metrics.update(
            {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        )
        if trainer.is_global_zero:
            write_json(run_dir / "metrics.json", record)
    if trainer.is_global_zero:
        show_summary(
            cfg.paths.output_dir,
            metrics,
            best_path,
            record["epochs"],
            time.perf_counter() - started,
            trainer.loggers,
        )
    return metrics


def fit(cfg: DictConfig, trainer: L.Trainer, model, datamodule, ckpt_path: str | None) -> dict:
    """Train; write and return the run's record (metrics.json): the last epoch's train/ and val/
    metrics, the exact final learning rate, the best checkpoint and its val/loss, the run's
    settings."""
    with stops_reach_ranks(trainer):
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    # last epoch's train/ and val/ ("step" is where the loggers filed them)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k != "step"}
    # the exact final learning rate (a scheduler's is also logged each epoch, as float32)
    if trainer.optimizers:
        metrics["train/lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
    epochs, global_step, best, best_score = fit_progress(trainer)
    if best_score is not None:  # best/val_loss, or best/<what the checkpoint callback follows>
        metrics[best_key(trainer)] = best_score
    record = {
        "metrics": metrics,
        "epochs": epochs,
        "global_step": global_step,
        "best_checkpoint": Path(best).name if best else None,
        "run_name": cfg.get("run_name"),
        "tags": list(cfg.get("tags") or []),
        "hparams": result_settings(model.run_config),
    }
    if trainer.is_global_zero:
        write_json(Path(cfg.paths.output_dir) / "metrics.json", record)
    return record


@hydra.main(version_base="1.3", config_path=str(boundary.CONF_DIR), config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    flush_denormals()  # also in a sweep's worker processes
    started, run_dir = time.perf_counter(), HydraConfig.get().runtime.output_dir
    metric = cfg.get("optimized_metric")
    record = finished_fit(cfg, Path(run_dir))
    if record is not None and (
        not cfg.get("test") or any(k.startswith("test/") for k in record["metrics"])
    ):
        print(
            f"hydra.run.dir={run_dir} is complete ({record['epochs']} epochs, trainer.max_epochs="
            f"{cfg.trainer.max_epochs}): nothing to train; its records are kept as they are. "
            "To train on, resume with a larger trainer.max_epochs",
            flush=True,
        )
        return record["metrics"].get(metric) if metric else None
    sweep_job = HydraConfig.get().mode == RunMode.MULTIRUN
    held = None
    # a sweep's job folder is locked like a single run's folder
    if sweep_job and rank_zero_only.rank == 0:
        try:
            held = lock(Path(run_dir), "the sweep's job folder")
        # another process trains in it: its run_info.json is not ours to write
        except UserError as e:
            return failed_job(e)
    try:
        return run_and_record(cfg, run_dir, started, metric, sweep_job)
    finally:
        if held is not None:
            held.unlink(missing_ok=True)


def run_and_record(
    cfg: DictConfig, run_dir: str, started: float, metric: str | None, sweep_job: bool
) -> float | None:
    """Train, and record in run_info.json how the run ended."""
    try:
        metrics = train(cfg)
    except SIGTERMException as e:  # InterruptCheckpoint saved last.ckpt and said how to resume
        write_run_info(run_dir, time.perf_counter() - started, e)
        if boundary.in_sweep_worker():  # the worker ends too (its pool would keep it waiting)
            sweep_dir = Path(HydraConfig.get().sweep.dir)
            boundary.end_stopped_worker(Path(run_dir) / LOCK, sweep_dir, SIGTERM_EXIT)
        sys.exit(SIGTERM_EXIT)
    except SystemExit as e:  # Lightning ends a fit that Ctrl-C interrupted with exit(1)
        if isinstance(e.__context__, KeyboardInterrupt):
            write_run_info(run_dir, time.perf_counter() - started, e.__context__)
        raise
    except Exception as e:
        write_run_info(run_dir, time.perf_counter() - started, e)
        if sweep_job and not boundary.full_error():
            return failed_job(e)
        exit_with(boundary.report(e))
    write_run_info(run_dir, time.perf_counter() - started)
    return metrics.get(metric) if metric else None


def failed_job(error: Exception) -> float:
    """In a sweep, one failed job must not stop the others: report it, return NaN to the sweeper.

    Its row in the sweep's summary shows the error line (from run_info.json).
    """
    boundary.log_traceback(error)
    user_error = boundary.user_error(error)
    print(f"error: {error_line(user_error or error)}", file=sys.stderr)
    if user_error is None:
        traceback.print_exception(error)
    return math.nan


def main() -> None:
    flush_denormals()  # before torch starts its worker threads, which copy the setting
    boundary.run(hydra_main, "train")


if __name__ == "__main__":
    main()
