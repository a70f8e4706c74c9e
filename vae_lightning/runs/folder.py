"""A Hydra callback that checks the run (or sweep) folder before Hydra writes anything into it."""

import tempfile
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from vae_lightning.errors import UserError, exit_with

RUN_OUTPUTS = ("checkpoints", "metrics.json", "tensorboard")


def holds_run(folder: Path) -> bool:
    """Whether ``folder`` already holds a training run's outputs."""
    return any((folder / name).exists() for name in RUN_OUTPUTS)


def check_folder(folder: Path, key: str, resume: bool = False, sweep: bool = False) -> None:
    """``folder`` must be writable and must not hold an earlier run (a sweep: in its job folders) unless resuming."""
    if not resume:
        jobs = sorted(p for p in folder.iterdir() if p.is_dir()) if sweep and folder.is_dir() else []
        earlier = [folder] + jobs
        taken = next((p for p in earlier if holds_run(p)), None)
        if taken is not None:
            found = ", ".join(str(taken / n) for n in RUN_OUTPUTS if (taken / n).exists())
            raise UserError(
                f"{key}={folder} already holds a run ({found}): choose a new {key}=..., "
                "or add resume=true to continue that run"
            )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise UserError(
            f"cannot write the output folder {key}={folder} ({e.strerror}): "
            f"set {key}=... or paths.log_dir=... to a writable folder"
        ) from None


class RunFolderGuard(Callback):
    """Refuse an unwritable folder, or one holding an earlier run, with one line and exit 2."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        try:
            check_folder(Path(str(config.hydra.run.dir)), "hydra.run.dir", resume=bool(config.get("resume")))
        except UserError as e:
            exit_with(e)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        try:
            check_folder(Path(str(config.hydra.sweep.dir)), "hydra.sweep.dir", sweep=True)
        except UserError as e:
            exit_with(e)
