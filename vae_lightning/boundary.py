"""The error boundary every entry point runs inside: a mistake in the user's input becomes
exit code 2 and one line naming the setting or file, what is wrong and what to do; a genuine bug
still shows its traceback.

    run(hydra_main, name)          an entry point's main(): Hydra composes the command line once and
                                   raises what does not compose to us; composition_error makes it
                                   one line with "did you mean" from Hydra's exception types and
                                   the override at fault (never from the wording of its messages)
    user_error(exc)                the one-line UserError for what torch, Lightning or the OS raised
                                   because of the input (a refused Trainer setting, a full disk...),
                                   or None for a bug
    log_traceback()                the full traceback into the run folder's log file
                                   (``<run>/train.log``)

``HYDRA_FULL_ERROR=1`` shows the full traceback on the terminal instead of the one line.
Also here: SIGTERM or Ctrl-C to a sweep whose jobs train in worker processes reaches every worker.
"""

import contextlib
import difflib
import errno
import logging
import os
import sys
import traceback
import warnings
from pathlib import Path

from hydra.experimental.callback import Callback

from vae_lightning.errors import USER_FULL_ERROR, UserError, exit_with, first_line, full_error
from vae_lightning.files import append_to_log_files
from vae_lightning.resolvers import override_key

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
HYDRA_FLAGS_WITHOUT_VALUE = {"-m", "--multirun", "--resolve"}
# sections that an entry point's config leaves out on purpose, and why
NOT_HERE = {
    "model": (
        "the checkpoint fixes the model: drop the model.* overrides, or train a new model with them"
    )
}


def sweep_probes(argv: list[str]) -> list[list[str]] | None:
    """The jobs that try each value of a command line once: its first job (the first value of each
    sweep), then each other value of a swept key with the rest at their first; None when other Hydra
    flags are used (--cfg, --help, -cn...), which Hydra handles itself."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    if any(a.startswith("-") and a not in HYDRA_FLAGS_WITHOUT_VALUE for a in argv):
        return None
    args = [a for a in argv if not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except OverrideParseException as e:  # a line Hydra cannot read: its message, on one line
        lines = [line.strip() for line in str(e.message).splitlines()[:2] if line.strip()]
        raise UserError(
            f"cannot read the command line ({'; '.join(lines)}): write each setting as key=value"
        ) from None
    values = []  # per override: its values, as override lines
    for o in parsed:
        if o.get_key_element().lstrip("+~").startswith("hydra"):
            continue  # Hydra's own settings: Hydra checks them
        if not o.is_sweep_override():
            values.append([o.input_line])
            continue
        try:
            swept = [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
        except Exception:  # interval sweeps (Optuna): no value to try
            continue
        if not swept:  # range(5,2): the sweep would run no job and report success
            raise UserError(f"{o.input_line} sweeps no value: give it at least one")
        values.append(swept)
    first = [v[0] for v in values]
    others = [first[:i] + [v] + first[i + 1 :] for i, vs in enumerate(values) for v in vs[1:]]
    return [first, *others]


def first_job(argv: list[str]) -> list[str] | None:
    """The overrides of a command line, one value per sweep (the first: a sweep's first job)."""
    probes = sweep_probes(argv)
    return None if probes is None else probes[0]


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


def compose(config_name: str, overrides: list[str]):
    """The config Hydra composes from ``overrides`` (with its own section)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name, overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def known_keys(config_name: str, overrides: list[str]) -> list[str]:
    """Every dotted key of the config these overrides compose (none when they do not)."""
    from omegaconf import OmegaConf

    try:
        return _keys(OmegaConf.to_container(compose(config_name, overrides), resolve=False))
    except Exception:
        return []


def chosen_option(config_name: str, overrides: list[str], group: str) -> str | None:
    """The option of ``group`` that these overrides compose with (None when they do not)."""
    try:
        return compose(config_name, overrides).hydra.runtime.choices.get(group)
    except Exception:
        return None


# settings that became something else, and what to use now
MOVED = {
    "model.loss": "is now the likelihood component: use model/likelihood=bernoulli (was bce), "
    "continuous_bernoulli (cb) or gaussian (mse)",
}


def not_a_setting(key: str, config_name: str, others: list[str]) -> UserError:
    if key.lstrip("+~") in MOVED:
        return UserError(f"{key} {MOVED[key.lstrip('+~')]}")
    known = known_keys(config_name, others)
    section = key.split(".")[0]
    if section in NOT_HERE and section not in known:
        return UserError(f"{key} is not a setting here: {NOT_HERE[section]}")
    return UserError(
        f"{key} is not a setting{_suggest(key, known)}: check its spelling "
        f"(python -m vae_lightning.{config_name} --cfg job lists them), or add a new key "
        f"with +{key}=..."
    )


def composition_error(error: Exception, config_name: str, overrides: list[str]) -> UserError:
    """The one line for overrides that do not compose, from Hydra's exception types and the override
    at fault (the one without which the others compose), never from the wording of Hydra's
    message."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    if (
        isinstance(error, MissingConfigException)
        and error.missing_cfg_file
        and error.options is not None
    ):
        group, _, option = str(error.missing_cfg_file).rpartition("/")
        options = sorted(error.options)
        return UserError(
            f"{group}={option} is not a {group} option{_suggest(option, options)}: choose one of "
            f"{', '.join(options)}"
        )
    cause = error.__cause__
    # a key no config has
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and getattr(
        cause, "full_key", None
    ):
        keys = [override_key(o) for o in overrides]
        key = next((k for k in keys if k.startswith(str(cause.full_key))), str(cause.full_key))
        others = [o for o in overrides if not override_key(o).startswith(key)]
        return not_a_setting(key, config_name, others)
    at_fault = [
        o
        for i, o in enumerate(overrides)
        if known_keys(config_name, overrides[:i] + overrides[i + 1 :])  # the rest composes
    ]
    for override in at_fault:  # model/posterior=iaf beside a model that has no posterior part
        name = override.partition("=")[0]
        parent, _, part = name.rpartition("/")
        if parent and not name.startswith(("+", "~")) and (CONF_DIR / name).is_dir():
            others = [o for o in overrides if o != override]
            chosen = chosen_option(config_name, others, parent)
            if chosen is not None:
                return UserError(
                    f"{override}: {parent}={chosen} has no {part} to choose: drop {override}, or "
                    f"choose a {parent} that has one"
                )
    if len(at_fault) == 1:
        override = at_fault[0]
        key, _, value = override.partition("=")
        name, others = key.lstrip("+~"), [o for o in overrides if o != override]
        if (
            key.startswith("+")
            and not key.startswith("++")
            and name in known_keys(config_name, others)
        ):
            return UserError(f"{key}: {name} is already a setting: drop the + ({name}=...)")
        if value == "null" and (CONF_DIR / name).is_dir():
            return UserError(
                f"{name}=null cannot drop a config group: use ~{name} (to run without it)"
            )
        if key.startswith("~"):
            return not_a_setting(name, config_name, others)
        return UserError(f"{override} does not compose: {first_line(error)}")
    return UserError(f"the overrides do not compose: {first_line(error)}")


def descendants(pid: int) -> list[int]:
    """The processes ``pid`` started, and theirs (Linux's /proc; elsewhere none)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


# the pid of a sweep's launcher, seen by its worker processes
SWEEP_PARENT = "VAE_LIGHTNING_SWEEP_PARENT"


def in_sweep_worker() -> bool:
    """Whether this process is a worker that a sweep's launcher started (joblib...)."""
    return os.environ.get(SWEEP_PARENT, str(os.getpid())) != str(os.getpid())


def end_process(code: int) -> None:
    """Flush what is written and end this process now with ``code`` (no pool can hold it back)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def end_stopped_worker(lock: Path, sweep_dir: Path, code: int, grace_s: float = 120.0) -> None:
    """End a stopped sweep worker whose job has saved and recorded how to resume: flush, release
    its job folder's ``lock``, then wait (up to ``grace_s``) until no other job of ``sweep_dir``
    still holds its lock, and end with ``code``. The first worker to end makes its pool (joblib's
    loky) take the executor for broken and SIGKILL the others, so none ends while another saves."""
    import time

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    lock.unlink(missing_ok=True)
    deadline = time.monotonic() + grace_s
    while training_jobs(sweep_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    os._exit(code)


def training_jobs(sweep_dir: Path) -> list[int]:
    """The live processes of this machine that hold a job folder's lock in ``sweep_dir`` (jobs still
    training)."""
    import socket

    from vae_lightning.runs.folder import LOCK, alive, holder

    pids = []
    for lock in Path(sweep_dir).glob(f"*/{LOCK}"):
        with contextlib.suppress(OSError):
            pid, host, _ = holder(lock)
            if pid and host == socket.gethostname() and alive(pid):
                pids.append(pid)
    return pids


def forward_stops(sweep_dir: Path, grace_s: float = 120.0) -> None:
    """SIGTERM or Ctrl-C to this process (a sweep's launcher, whose jobs train in worker processes)
    reaches every worker as SIGTERM: each saves its last.ckpt and records how to resume; then this
    process exits with the signal's shell code (143, 130). The workers ignore the terminal's own
    SIGINT (ignore_terminal_interrupt), so each is stopped once, and none is killed mid-save by its
    pool: this process waits (up to ``grace_s``) for the processes that hold the locks of
    ``sweep_dir``'s jobs to end."""
    import signal
    import time

    from vae_lightning.runs.folder import alive

    def stop_workers(signum, frame):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C would not wait for the saves
        workers = descendants(os.getpid())
        how = "stopped by SIGTERM" if signum == signal.SIGTERM else "interrupted (Ctrl-C)"
        print(
            f"{how}: stopping the sweep's {len(workers)} worker processes (each saves its "
            "last.ckpt)",
            file=sys.stderr,
            flush=True,
        )
        for pid in workers:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
        jobs, deadline = set(training_jobs(sweep_dir)), time.monotonic() + grace_s
        while time.monotonic() < deadline and any(alive(pid) for pid in jobs):
            time.sleep(0.2)
        end_process(128 + signum)

    os.environ[SWEEP_PARENT] = str(os.getpid())
    signal.signal(signal.SIGTERM, stop_workers)
    signal.signal(signal.SIGINT, stop_workers)


def ignore_terminal_interrupt() -> None:
    """In a sweep's worker process: Ctrl-C reaches the launcher, which stops this worker with
    SIGTERM (forward_stops)."""
    import signal

    if in_sweep_worker():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def user_error(exc: BaseException) -> UserError | None:
    """The one-line UserError for an exception the user's input caused, else None (a bug: show the
    traceback)."""
    from hydra.errors import InstantiationException
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    if isinstance(exc, UserError):
        return exc
    cause = (
        exc.__cause__
        if isinstance(exc, InstantiationException) and exc.__cause__ is not None
        else exc
    )
    if isinstance(cause, UserError):
        return cause
    # a value the config cannot give: ???, a broken ${...}
    if isinstance(cause, OmegaConfBaseException):
        key = getattr(cause, "full_key", None) or "a setting"
        if isinstance(cause, MissingMandatoryValue):
            return UserError(
                f"{key} is required (its config says ???): set {key}=... on the command line"
            )
        return UserError(f"{key} cannot be read: {first_line(cause)}")
    if isinstance(cause, OSError) and cause.errno in (
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENOTDIR,
        errno.EISDIR,
    ):
        where = os.fsdecode(cause.filename) if cause.filename else "a file"
        if cause.errno in (errno.ENOSPC, errno.EDQUOT):
            fix = (
                "free some space, or point hydra.run.dir (or paths.log_dir) at another disk; "
                "checkpoints already written are intact"
            )
        elif cause.errno in (errno.ENOTDIR, errno.EISDIR):
            fix = "point the setting that names it at a folder (or a file) of its own"
        else:
            fix = "give this user access to it, or point the setting that names it elsewhere"
        return UserError(f"cannot use {where} ({cause.strerror}): {fix}")
    if isinstance(cause, MisconfigurationException):
        message = first_line(cause)
        return UserError(
            f"Lightning refuses the configuration: {message}: check the trainer.* settings "
            "(--cfg job shows them)"
        )
    return None


def log_traceback(exc: BaseException) -> None:
    """Write the exception's traceback, and the one line the user sees, to the log files of Python's
    root logger (Hydra's job log: <run>/train.log)."""
    error = user_error(exc)
    text = "".join(traceback.format_exception(exc)) + (
        f"error: {error}\n" if error is not None else ""
    )
    append_to_log_files(text)


def report(exc: BaseException) -> UserError:
    """Log the traceback; return the user's one-line error. A genuine bug (in the template or in a
    researcher's own code) prints its whole traceback and exits 1, rather than Hydra's one-line
    summary of it; with HYDRA_FULL_ERROR=1 every error is re-raised."""
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
    """Drop what dependencies print on every run that says nothing about it: Lightning's advert for
    its cloud logger, a deprecation warning Lightning's own code triggers inside torch, the model
    summary's note that it counts bf16-mixed weights as 32-bit (they are 32-bit: bf16-mixed keeps
    fp32 weights), and the note on every resume that the checkpoint folder is not empty. Other
    warnings stay."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropTips())
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.filterwarnings(
        "ignore", message=r"Precision bf16-mixed is not supported by the model summary"
    )
    # a resumed run's own folder (a used folder is refused unless the run resumes)
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")


# set by the first Hydra callback once Hydra has composed the command line (runs/build.BuildRun):
# an exception out of Hydra before then is the command line's
composed: list[bool] = []


def say_thread_errors() -> None:
    """An exception that ends a background thread (TensorBoard's event writer on a folder turned
    read-only...) is one warning line when the user's input caused it; a bug keeps its traceback."""
    import threading

    def hook(args) -> None:
        error = user_error(args.exc_value) if args.exc_value is not None else None
        if error is None or full_error():
            threading.__excepthook__(args)
        else:
            print(f"warning: {error}", file=sys.stderr, flush=True)

    threading.excepthook = hook


def run(hydra_main, config_name: str) -> None:
    """An entry point's ``main()``: run the Hydra task, with what does not compose as one line.

    The command line is composed by Hydra alone, which raises its own exception types to us
    (``HYDRA_FULL_ERROR`` set for it; the user's own value is kept for ``full_error``); each value
    of a sweep is composed once before the sweep's folder exists (runs/build.BuildRun)."""
    quiet_dependency_notices()
    say_thread_errors()
    argv = sys.argv[1:]
    before = {k: os.environ.get(k) for k in (USER_FULL_ERROR, "HYDRA_FULL_ERROR")}
    os.environ[USER_FULL_ERROR] = "1" if full_error() else "0"  # seen by the processes it starts
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises, rather than prints, what does not compose
    composed.clear()
    try:
        hydra_main()
    except Exception as e:
        if composed:  # what the task did not catch itself (its record, written last)
            exit_with(report(e))
        if full_error():
            raise
        try:
            error = composition_error(e, config_name, first_job(argv) or [])
        except UserError as unreadable:  # the command line itself cannot be parsed
            error = unreadable
        exit_with(error)
    finally:  # as it was (a notebook or a test calling main() again)
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class SweepSignals(Callback):
    """Hydra callback: when a sweep's jobs train in processes of their own (a launcher other than
    Hydra's basic one, e.g. joblib), SIGTERM or Ctrl-C to the command reaches them all."""

    def on_multirun_start(self, config, **kwargs) -> None:
        if "BasicLauncher" not in str(config.hydra.launcher.get("_target_")):
            forward_stops(Path(str(config.hydra.sweep.dir)))

    def on_job_start(self, config, **kwargs) -> None:
        ignore_terminal_interrupt()
