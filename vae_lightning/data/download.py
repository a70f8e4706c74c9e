"""Fetching a missing dataset through torchvision, or saying in one line why it cannot be
fetched."""

import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from vae_lightning.errors import UserError, first_line

DOWNLOAD_TIMEOUT_S = 10


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether the host of ``url`` accepts a connection within ``timeout`` seconds (no internet:
    False, fast)."""
    parts = urlsplit(url)
    try:
        socket.create_connection(
            (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)), timeout
        ).close()
    except OSError:
        return False
    return True


def fetch(
    what: str, where: Path, urls: Sequence[str], download: bool, get: Callable[[], object], fix: str
) -> None:
    """``what`` is missing from ``where``: run ``get()`` (a torchvision download) if ``download``
    and a server answers within seconds; otherwise, or if it fails, a UserError ending in
    ``fix``."""
    if not download:
        raise UserError(f"{what} not found in {where} and data.download=false: {fix}")
    hosts = list(dict.fromkeys(urlsplit(u).hostname for u in urls))
    if not any(reachable(u) for u in urls):
        raise UserError(
            f"{what} not found in {where} and no download server answers "
            f"({', '.join(hosts)}): {fix}"
        )
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        get()
    except Exception as e:  # mirror down, disk full...
        reason = first_line(e)
        raise UserError(
            f"{what} not found in {where} and the download failed ({reason}): {fix}"
        ) from None
    finally:
        socket.setdefaulttimeout(previous)
