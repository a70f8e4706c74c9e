"""A run's record: the settings that define its result (one list, used by its name in the loggers
and the sweep summary, the HParams dashboard, ``metrics.json`` and the resume check), and how it
ended (``run_info.json``, written by training and read by the sweep summary)."""

import sys
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from vae_lightning.errors import UserError, first_line
from vae_lightning.files import write_json

RUN_INFO = "run_info.json"
DEFINES_RESULT = ("seed", "model", "optimizer", "scheduler", "data", "trainer", "experiment")
# ...except where things are and switches that change how a run is shown or computed, not its result
NOT_RESULT = (
    "root",
    "path",
    "download",
    "on_device",
    "num_workers",
    "foreach",
    "fused",
    "compile",
    "compile_mode",
    "default_root_dir",
    "accelerator",
    "enable_progress_bar",
    "enable_model_summary",
    "log_every_n_steps",
    "profiler",
)
CLASS_SHOWN = (
    "model.",
    "model.net.",
    "model.prior.",
    "model.posterior.",
    "model.likelihood.",
    "optimizer.",
    "scheduler.",
)


def defines_result(key: str) -> bool:
    """Whether a dotted key (or a config group, ``model/net``) is one of the settings that define a
    run's result."""
    key = key.lstrip("+~").replace("/", ".")
    return key.split(".", 1)[0] in DEFINES_RESULT and not key.rsplit(".", 1)[-1].startswith(
        NOT_RESULT
    )


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"model": {"loss": "bce"}} -> {"model.loss": "bce"}; Hydra's ``_target_`` keys are dropped,
    except that the class of the model, its parts, the optimizer and the scheduler shows as
    ``model`` (e.g. IWAE), ``model.net`` (MLPNet), ``model.prior``, ``model.posterior``,
    ``optimizer``, ``scheduler``."""
    flat = {}
    for key, value in tree.items():
        if key == "_target_" and prefix in CLASS_SHOWN:
            flat[prefix[:-1]] = str(value).rsplit(".", 1)[-1]
        if str(key).startswith("_"):
            continue
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def result_settings(config: dict) -> dict:
    """The settings of a run's composed config (a plain dict) that define its result, as
    {dotted key: value}."""
    flat = flatten({k: config[k] for k in DEFINES_RESULT if k in config})
    return {k: v for k, v in flat.items() if defines_result(k)}


@rank_zero_only
def write_run_info(
    run_dir: str | Path, wall_time_s: float, error: BaseException | None = None
) -> None:
    """Record how a run ended: its wall time, status (completed, failed, or interrupted by a signal:
    resumable) and (if it did not complete) its one-line error."""
    stopped = isinstance(error, (KeyboardInterrupt, SIGTERMException))
    status = "completed" if error is None else "interrupted" if stopped else "failed"
    info = {"status": status, "wall_time_s": round(wall_time_s, 3)}
    if error:
        how = (
            "interrupted (Ctrl-C)" if isinstance(error, KeyboardInterrupt) else "stopped by SIGTERM"
        )
        info["error"] = f"{how}: resume=true continues it" if stopped else error_line(error)
    try:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        write_json(Path(run_dir) / RUN_INFO, info)
    except OSError as e:
        if error is None:
            raise
        # the run's own error is what the user must see; this one is said on the way
        print(f"warning: {RUN_INFO} not written ({e.strerror}: {e.filename})", file=sys.stderr)


def error_line(error: BaseException) -> str:
    """An error's message on one line (at most 300 characters); unexpected exceptions keep their
    type name."""
    message = first_line(error)
    if not isinstance(error, UserError) and str(error).strip():
        message = f"{type(error).__name__}: {message}"
    return message if len(message) <= 300 else message[:297] + "..."
