"""The error boundary every entry point runs inside: a mistake in the user's input becomes exit code 2 and one
line naming the setting or file, what is wrong and what to do; a genuine bug still shows its traceback.

    preflight(config_name, argv)   compose the command line's config before Hydra runs anything, so a misspelt
                                   key or an unknown group option is one line with "did you mean", not a
                                   multi-line Hydra block, and no run folder is made for it
    user_error(exc)                the one-line UserError for what torch, Lightning or the OS raised because
                                   of the input (a refused Trainer setting, a full disk...), or None for a bug
    log_traceback()                the full traceback into the run folder's log file (``<run>/train.log``)

``HYDRA_FULL_ERROR=1`` shows the full traceback on the terminal instead of the one line.
"""

import difflib
import errno
import logging
import re
import sys
import traceback
import warnings
from pathlib import Path

from vae_lightning.errors import UserError, exit_with, first_line, full_error

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
HYDRA_FLAGS_WITHOUT_VALUE = {"-m", "--multirun", "--resolve"}
# sections that an entry point's config leaves out on purpose, and why
NOT_HERE = {"model": "the checkpoint fixes the model: drop the model.* overrides, or train a new model with them"}


def _overrides(argv: list[str]) -> list[str] | None:
    """The overrides of a command line, one value per sweep (the first); None when other Hydra flags are used
    (--cfg, --help, -cn...), which Hydra handles itself."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if any(a.startswith("-") and a not in HYDRA_FLAGS_WITHOUT_VALUE for a in argv):
        return None
    args = [a for a in argv if not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except Exception as e:  # OverrideParseException: a line Hydra cannot read
        lines = [line.strip() for line in str(e).splitlines() if line.strip() and not line.startswith("See https")]
        raise UserError(f"cannot read the command line ({'; '.join(lines)}): write each setting as key=value") from None
    single = []
    for o in parsed:
        if o.get_key_element().lstrip("+~").startswith("hydra"):
            continue  # Hydra's own settings: Hydra checks them
        if o.is_sweep_override():
            try:
                single.append(f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}")
            except Exception:  # interval sweeps (Optuna): no value to try
                continue
        else:
            single.append(o.input_line)
    return single


def _keys(tree: dict, prefix: str = "") -> list[str]:
    """Every dotted key of a config (as a plain dict)."""
    keys = []
    for k, v in tree.items():
        keys.append(f"{prefix}{k}")
        if isinstance(v, dict):
            keys += _keys(v, f"{prefix}{k}.")
    return keys


def _suggest(word: str, choices: list[str]) -> str:
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {match[0]}?)" if match else ""


def preflight(config_name: str, argv: list[str], check=None) -> None:
    """Compose ``config_name`` with the command line's overrides, UserError for any that do not compose; then
    ``check(config)`` (not for a sweep, whose values differ from job to job)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    overrides = _overrides(argv)
    if overrides is None:
        return

    def known_keys(without: str) -> list[str]:
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                cfg = compose(config_name, overrides=[o for o in overrides if not o.lstrip("+~").startswith(without)])
            return _keys(OmegaConf.to_container(cfg, resolve=False))
        except Exception:
            return []

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
            sweep = "-m" in argv or "--multirun" in argv or str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    except Exception as e:
        message = str(e)
        if m := re.search(r"Could not find '(.+)/([^'/]+)'", message):
            group, option = m.groups()
            options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
            raise UserError(
                f"{group}={option} is not a {group} option{_suggest(option, options)}: choose one of {', '.join(options)}"
            ) from None
        if m := re.search(r"Could not override '([^']+)'|'([^']+)' does not exist", message):
            key = m.group(1) or m.group(2)
            known = known_keys(key)
            section = key.split(".")[0]
            if section in NOT_HERE and section not in known:
                raise UserError(f"{key} is not a setting here: {NOT_HERE[section]}") from None
            raise UserError(
                f"{key} is not a setting{_suggest(key, known)}: check its spelling "
                f"(python -m vae_lightning.{config_name} --cfg job lists them), or add a new key with +{key}=..."
            ) from None
        if "Config group override must be a string" in message:
            nulled = [o.split("=")[0] for o in overrides if o.endswith("=null") and (CONF_DIR / o.split("=")[0]).is_dir()]
            group = nulled[0] if nulled else "<group>"
            raise UserError(f"{group}=null cannot drop a config group: use ~{group} (to run without it)") from None
        if m := re.search(r"An item is already at '([^']+)'", message):
            key = m.group(1)
            raise UserError(f"+{key}: {key} is already a setting: drop the + ({key}=...)") from None
        raise UserError(f"the overrides do not compose: {first_line(e)}") from None
    finally:
        GlobalHydra.instance().clear()
    if check is not None and not sweep:  # a sweep's jobs check their own values: a bad one is a failed row
        check(cfg)


def user_error(exc: BaseException) -> UserError | None:
    """The one-line UserError for an exception the user's input caused, else None (a bug: show the traceback)."""
    from hydra.errors import InstantiationException
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    if isinstance(exc, UserError):
        return exc
    cause = exc.__cause__ if isinstance(exc, InstantiationException) and exc.__cause__ is not None else exc
    if isinstance(cause, UserError):
        return cause
    if isinstance(cause, OmegaConfBaseException):  # a value the config cannot give: ???, a broken ${...}
        key = getattr(cause, "full_key", None) or "a setting"
        if isinstance(cause, MissingMandatoryValue):
            return UserError(f"{key} is required (its config says ???): set {key}=... on the command line")
        return UserError(f"{key} cannot be read: {first_line(cause)}")
    if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS):
        where = cause.filename or "a file"
        if cause.errno in (errno.ENOSPC, errno.EDQUOT):
            fix = ("free some space, or point hydra.run.dir (or paths.log_dir) at another disk; "
                   "checkpoints already written are intact")
        else:
            fix = "give this user access to it, or point the setting that names it elsewhere"
        return UserError(f"cannot use {where} ({cause.strerror}): {fix}")
    if isinstance(cause, MisconfigurationException):
        message = first_line(cause)
        return UserError(f"Lightning refuses the configuration: {message}: check the trainer.* settings (--cfg job shows them)")
    return None


def log_traceback(exc: BaseException) -> None:
    """Write the exception's traceback, and the one line the user sees, to the log files of Python's root logger
    (Hydra's job log: <run>/train.log)."""
    error = user_error(exc)
    text = "".join(traceback.format_exception(exc)) + (f"error: {error}\n" if error is not None else "")
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.acquire()
            try:
                handler.stream.write(text)
                handler.flush()
            finally:
                handler.release()


def report(exc: BaseException) -> UserError:
    """Log the traceback; return the user's one-line error. A genuine bug (in the template or in a researcher's own
    code) prints its whole traceback and exits 1, rather than Hydra's one-line summary of it; with
    HYDRA_FULL_ERROR=1 every error is re-raised."""
    log_traceback(exc)
    error = user_error(exc)
    if full_error():
        raise exc
    if error is None:
        traceback.print_exception(exc)
        sys.exit(1)
    return error


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def quiet_dependency_notices() -> None:
    """Drop what dependencies print on every run that says nothing about it: Lightning's advert for its cloud
    logger, a deprecation warning Lightning's own code triggers inside torch, and the model summary's note that it
    counts bf16-mixed weights as 32-bit (they are 32-bit: bf16-mixed keeps fp32 weights). Other warnings stay."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropTips())
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.filterwarnings("ignore", message=r"Precision bf16-mixed is not supported by the model summary")


def run(hydra_main, config_name: str, check=None) -> None:
    """An entry point's ``main()``: preflight the command line (and ``check`` its composed config), then run
    the Hydra task."""
    quiet_dependency_notices()
    try:
        preflight(config_name, sys.argv[1:], check)
    except Exception as e:
        error = user_error(e)
        if error is None or full_error():
            raise
        exit_with(error)
    hydra_main()
