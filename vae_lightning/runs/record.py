"""A run's record of how it ended (``run_info.json``), written by training and read by the sweep summary."""

from pathlib import Path

from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from vae_lightning.errors import UserError
from vae_lightning.files import write_json

RUN_INFO = "run_info.json"


@rank_zero_only
def write_run_info(run_dir: str | Path, wall_time_s: float, error: BaseException | None = None) -> None:
    """Record how a run ended: its wall time, status (completed, failed, or interrupted by a signal: resumable)
    and (if it did not complete) its one-line error."""
    stopped = isinstance(error, (KeyboardInterrupt, SIGTERMException))
    status = "completed" if error is None else "interrupted" if stopped else "failed"
    info = {"status": status, "wall_time_s": round(wall_time_s, 3)}
    if error:
        info["error"] = "stopped by SIGTERM: resume=true continues it" if stopped else error_line(error)
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    write_json(Path(run_dir) / RUN_INFO, info)


def error_line(error: BaseException) -> str:
    """An error's message on one line (at most 300 characters); unexpected exceptions keep their type name."""
    message = " ".join(str(error).split())
    message = message if isinstance(error, UserError) else f"{type(error).__name__}: {message}".rstrip(": ")
    return message if len(message) <= 300 else message[:297] + "..."
