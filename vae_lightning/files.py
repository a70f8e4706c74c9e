"""Writing result files so that a reader (or a kill) never leaves half of one."""

import json
import os
import tempfile
from pathlib import Path

from vae_lightning.errors import UserError


def output_file(value, key: str, default_name: str) -> Path:
    """The file an output setting names (a folder: ``default_name`` inside it), checked writable before any work
    is done; UserError naming ``key`` otherwise."""
    path = Path(str(value)).expanduser()
    if path.is_dir():
        path = path / default_name
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise UserError(f"{key}={value} cannot be written ({blocking} is a file, not a folder): choose another {key}=...")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent):
            pass
    except OSError as e:
        raise UserError(f"{key}={value} cannot be written ({e.strerror}): choose another {key}=...") from None
    return path


def write_json(path: str | Path, data: dict) -> None:
    """Write ``data`` as sorted, indented JSON via a temp file and an atomic rename."""
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
