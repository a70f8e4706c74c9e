"""Mistakes a user can fix: one exception type whose message is printed as a single line, and the
checks that components run on their own settings.

A component (network, DataModule, the LightningModule) checks its constructor arguments and raises
``SettingError(name, value, problem)``. Whoever builds it from a config group adds the group's path
(``error.under("model")``), so the user reads ``model.net.hidden_dims=[] must be ...``: a new
component brings its own checks and nothing else restates them.
"""

import inspect
import math
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn


class UserError(Exception):
    """A bad setting or file; the message names it and says what to do instead."""


class SettingError(UserError):
    """A component's own setting is bad. ``problem`` may use ``{key}`` for the setting's full dotted
    name.

    The value shows as typed for numbers and lists, quoted otherwise (``plain=True``: as typed
    whatever it is).
    """

    def __init__(self, key: str, value, problem: str, plain: bool = False) -> None:
        self.key, self.value, self.problem, self.plain = key, value, problem, plain
        super().__init__(str(self))

    def under(self, prefix: str) -> "SettingError":
        """The same error for the setting seen from one config level up (``prefix.key``)."""
        return SettingError(
            f"{prefix}.{self.key}" if prefix else self.key, self.value, self.problem, self.plain
        )

    def __str__(self) -> str:
        as_typed = self.plain or (
            isinstance(self.value, (int, float, list)) and not isinstance(self.value, bool)
        )
        return (
            f"{self.key}={self.value if as_typed else repr(self.value)} "
            f"{self.problem.replace('{key}', self.key)}"
        )


def first_line(error: BaseException) -> str:
    """An exception's message on one line: its first non-empty line, spaces collapsed (else its
    type's name)."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    return " ".join(lines[0].split()) if lines else type(error).__name__


# the user's HYDRA_FULL_ERROR, once the boundary set its own
USER_FULL_ERROR = "VAE_LIGHTNING_FULL_ERROR"


def full_error() -> bool:
    """HYDRA_FULL_ERROR=1: every error is re-raised for its full traceback (Hydra's own switch)."""
    return os.environ.get(USER_FULL_ERROR, os.environ.get("HYDRA_FULL_ERROR")) == "1"


def exit_with(error: UserError) -> NoReturn:
    """What an entry point does with a UserError: print its one line and exit 2.

    With HYDRA_FULL_ERROR=1 the error is re-raised instead, for the full traceback.
    """
    if full_error():
        raise error
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


def _example(example) -> str:
    # {key}: filled in by SettingError
    return "" if example is None else f", e.g. {{key}}={example}"


def check_int(key: str, value, low: int | None = None, example=None, note: str = "") -> int:
    """``value`` must be an integer (not a bool) >= ``low``; ``note`` explains the bound, e.g.
    ' (0 = off)'."""
    bound = "" if low is None else f" >= {low}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingError(key, value, f"must be an integer{bound}{note}{_example(example)}")
    if low is not None and value < low:
        raise SettingError(key, value, f"must be{bound}{note}{_example(example)}")
    return value


def check_folder(key: str, value) -> str | None:
    """``value`` (or None) must be a folder, or a path where one can be made, not a file. (A file
    above it is the run folder's case when it lies inside it: the run's own check names that.)"""
    if value is not None and Path(str(value)).expanduser().is_file():
        raise SettingError(key, value, "must be a folder, but it is a file")
    return None if value is None else str(value)


def check_float(
    key: str,
    value,
    low: float | None = None,
    low_ok: bool = True,
    example=None,
    note: str = "",
    high: float | None = None,
) -> float:
    """``value`` must be a finite number >= ``low`` (> ``low`` unless ``low_ok``)
    and <= ``high``."""
    bound = "" if low is None else f" {'>=' if low_ok else '>'} {low:g}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingError(key, value, f"must be a number{bound}{note}{_example(example)}")
    if not math.isfinite(value):
        raise SettingError(key, value, f"must be a finite number{bound}{note}{_example(example)}")
    if low is not None and (value < low or (value == low and not low_ok)):
        raise SettingError(key, value, f"must be{bound}{note}{_example(example)}")
    if high is not None and value > high:
        raise SettingError(key, value, f"must be <= {high:g}{note}{_example(example)}")
    return float(value)


def check_bool(key: str, value) -> bool:
    if not isinstance(value, bool):
        raise SettingError(key, value, "must be true or false")
    return value


def check_choice(key: str, value, choices) -> str:
    if value not in choices:
        raise SettingError(key, value, f"is not one of {', '.join(choices)}")
    return value


def accepted_settings(cls: type) -> set[str] | None:
    """The keyword arguments ``cls(...)`` takes, following ``**kwargs`` passed on to the base
    classes' ``__init__``; None when some ``__init__`` on the way takes anything."""
    names = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters.values()
        names |= {p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            return names
    return None


@contextmanager
def settings_of(where: str):
    """Inside, a component's SettingError is reported under its config path ``where`` (e.g.
    ``data``)."""
    try:
        yield
    except SettingError as e:
        raise e.under(where) from None


def unknown_setting(config, where: str) -> None:
    """SettingError for a key of ``config`` that the class (or function) its ``_target_`` names does
    not take: a typo, or a key left from another component. Read from the signature; a target that
    takes anything passes."""
    from hydra.utils import get_object

    try:
        target = get_object(str(config.get("_target_")))
    except Exception:  # not importable: instantiate says so
        return
    if isinstance(target, type):
        accepted = accepted_settings(target)
    else:
        parameters = inspect.signature(target).parameters.values()
        accepted = (
            None
            if any(p.kind is p.VAR_KEYWORD for p in parameters)
            else {p.name for p in parameters}
        )
    for name in config:
        if accepted is not None and not str(name).startswith("_") and name not in accepted:
            raise SettingError(
                f"{where}.{name}",
                config[name],
                f"is not a setting of {target.__name__}: drop it with ~{{key}}, or fix its name",
                plain=not isinstance(config[name], str),
            )


def instantiate_component(config, where: str, **kwargs):
    """``hydra.utils.instantiate(config, **kwargs)``, with a setting the class does not take named
    as a setting, the component's own SettingError reported under its config path ``where`` (e.g.
    ``model``) and any other UserError passed on as it is."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    unknown_setting(config, where)
    with settings_of(where):
        try:
            return instantiate(config, **kwargs)
        except InstantiationException as e:
            if isinstance(e.__cause__, UserError):
                raise e.__cause__ from None
            raise
