"""Writing result files so that a reader (or a kill) never leaves half of one."""

import json
import os
from pathlib import Path


def write_json(path: str | Path, data: dict) -> None:
    """Write ``data`` as sorted, indented JSON via a temp file and an atomic rename."""
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
