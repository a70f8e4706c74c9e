"""Writing result files so that a reader (or a kill) never leaves half of one."""

import json
import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from vae_lightning.errors import UserError, first_line


def output_file(
    value, key: str, default_name: str, suffixes: tuple[str, ...] = (), keep: tuple[str, ...] = ()
) -> Path:
    """The file an output setting names (a folder: ``default_name`` inside it), checked writable
    before any work is done; UserError naming ``key`` otherwise. Its name must end in one of
    ``suffixes`` (default: ``default_name``'s), and a file named in ``keep`` (a run's records) is
    never written over."""
    path = Path(str(value)).expanduser()
    if path.is_dir():
        path = path / default_name
    suffixes = suffixes or (Path(default_name).suffix,)
    if path.suffix.lower() not in suffixes:
        raise UserError(
            f"{key}={value} must name a {' / '.join(suffixes)} file (or a folder, for "
            f"{default_name} in it): choose another {key}=..."
        )
    if path.name in keep and path.exists():
        raise UserError(
            f"{key}={value} would write over the run's {path.name}: choose another {key}=..."
        )
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise UserError(
            f"{key}={value} cannot be written ({blocking} is a file, not a folder): choose another "
            f"{key}=..."
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent):
            pass
    except OSError as e:
        raise UserError(
            f"{key}={value} cannot be written ({e.strerror}): choose another {key}=..."
        ) from None
    return path


@contextmanager
def reading(path: str | Path, problem: str, fix: str):
    """The one way a file the user gives is decoded: inside, whatever the decoding library raises
    (a truncated zip, a bad pickle, an image its decoder refuses, an unreadable file) becomes one
    line, ``<path> <problem> (<its type>: <its first line, cut at 160>): <fix>``. Keep only the
    library's read inside: the file is what is wrong there, whatever the exception's type."""
    try:
        yield
    except UserError:
        raise
    except Exception as e:
        reason = first_line(e)
        reason = reason if len(reason) <= 160 else reason[:157] + "..."
        raise UserError(f"{path} {problem} ({type(e).__name__}: {reason}): {fix}") from None


@contextmanager
def writing(path: str | Path):
    """Inside, an OSError (a full disk, a folder turned read-only) names ``path``: a write error of
    a stream, or one that torch's writer wraps in a RuntimeError, often names no file."""
    try:
        yield
    except OSError as e:
        if e.filename:
            raise
        raise OSError(e.errno, e.strerror, str(path)) from e
    except RuntimeError as e:
        cause = e.__cause__ or e.__context__
        if not isinstance(cause, OSError):
            raise
        raise OSError(cause.errno, cause.strerror, str(path)) from e


def write_json(path: str | Path, data: dict) -> None:
    """Write ``data`` as sorted, indented JSON via a temp file and an atomic rename (the old file
    stays whole if the write fails)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except OSError as e:  # named by the file it writes, not by its temp file
        raise OSError(e.errno, e.strerror, str(path)) from e
    finally:
        tmp.unlink(missing_ok=True)


def append_to_log_files(text: str) -> None:
    """Append ``text`` to the log files of Python's root logger (a run's ``train.log``), beside what
    the terminal shows."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and handler.stream is not None:
            handler.acquire()
            try:
                handler.stream.write(text)
                handler.flush()
            finally:
                handler.release()
