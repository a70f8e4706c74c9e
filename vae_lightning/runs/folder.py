"""A Hydra callback that checks the run (or sweep) folder before Hydra writes anything into it, and
holds the run folder's lock while the run lasts."""

import atexit
import contextlib
import os
import socket
import tempfile
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from vae_lightning.errors import UserError, exit_with

RUN_OUTPUTS = ("checkpoints", "metrics.json", "tensorboard")
LOCK = ".lock"


def holds_run(folder: Path) -> bool:
    """Whether ``folder`` already holds a training run's outputs."""
    return any((folder / name).exists() for name in RUN_OUTPUTS)


def unwritable(folder: Path, key: str, error: OSError) -> UserError:
    return UserError(
        f"cannot write the output folder {key}={folder} ({error.strerror}): "
        f"set {key}=... or paths.log_dir=... to a writable folder"
    )


def check_folder(folder: Path, key: str, resume: bool = False, sweep: bool = False) -> None:
    """``folder`` must be writable and must not hold an earlier run (a sweep: in its job folders)
    unless resuming."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise unwritable(folder, key, e) from None
    if not resume:
        jobs = sorted(p for p in folder.iterdir() if p.is_dir()) if sweep else []
        taken = next((p for p in [folder, *jobs] if holds_run(p)), None)
        if taken is not None:
            found = ", ".join(str(taken / n) for n in RUN_OUTPUTS if (taken / n).exists())
            raise UserError(
                f"{key}={folder} already holds a run ({found}): choose a new {key}=..., "
                "or add resume=true to continue that run"
            )


def alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def holder(path: Path) -> tuple[int, str, list[str]]:
    """Who holds the lock ``path``: its process id (0 when unreadable), host and start time."""
    pid, host, *since = (path.read_text().split() or ["0", "?"]) + ["?"]
    return (int(pid) if pid.isdigit() else 0), host, since


def release(path: Path, me: str) -> None:
    """Remove the lock ``path`` if this process holds it; one it cannot remove (a folder turned
    read-only) is left, and is stale once this process has ended."""
    with contextlib.suppress(OSError):
        if path.is_file() and path.read_text().startswith(me):
            path.unlink()


def lock(folder: Path, key: str) -> Path:
    """Take ``<folder>/.lock`` (created atomically, holding pid, host and time) for this process
    until it exits.

    A lock whose process is gone (killed) is stale and taken over; one held by a live process is
    refused."""
    path = folder / LOCK
    me = f"{os.getpid()} {socket.gethostname()} {time.strftime('%Y-%m-%d %H:%M:%S')}"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid, host, since = holder(path)
            if host != socket.gethostname() or (pid and alive(pid)):
                what = f"{key}={folder}" if " " not in key else f"{key} {folder}"
                instead = (
                    f"choose another {key}=..."
                    if " " not in key
                    else "choose another hydra.sweep.dir=..."
                )
                raise UserError(
                    f"{what} is in use by process {pid} on {host} (since {' '.join(since[:2])}): "
                    f"wait for it to end, or {instead} (a lock left by a crash on another machine: "
                    f"delete {path})"
                ) from None
            path.unlink(missing_ok=True)  # its process is gone
            continue
        except OSError as e:
            raise unwritable(folder, key, e) from None
        with os.fdopen(fd, "w") as f:
            f.write(me + "\n")
        atexit.register(release, path, me)
        return path
    raise UserError(
        f"{key}={folder}: cannot take its lock {path}: delete it if no run is using the folder"
    )


def remove_stale_temporaries(folder: Path) -> None:
    """Half-written checkpoint files (``.<name>.ckpt.<pid>.tmp``) left by a killed run: nobody
    writes them now."""
    for tmp in (folder / "checkpoints").glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


class RunFolderGuard(Callback):
    """Refuse an unwritable folder, one holding an earlier run, or one in use by another process,
    with one line and exit 2; then hold the folder's lock while this run lasts."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        # another task of the same srun step (trainer=slurm): rank zero guards the folder
        if rank_zero_only.rank != 0:
            return
        folder = Path(str(config.hydra.run.dir))
        held = None
        try:
            if folder.is_dir():  # a second process on it is told who holds it, before anything else
                held = lock(folder, "hydra.run.dir")
            check_folder(folder, "hydra.run.dir", resume=bool(config.get("resume")))
            held = held or lock(folder, "hydra.run.dir")
        except UserError as e:
            if held is not None:
                held.unlink(missing_ok=True)
            exit_with(e)
        remove_stale_temporaries(folder)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        try:
            check_folder(Path(str(config.hydra.sweep.dir)), "hydra.sweep.dir", sweep=True)
        except UserError as e:
            exit_with(e)
