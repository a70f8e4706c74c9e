"""OmegaConf resolvers the configs use; registered once on import of an entry point."""

import secrets
from pathlib import Path

from omegaconf import OmegaConf

REPO_ROOT = Path(__file__).resolve().parents[1]


def register_resolvers() -> None:
    # ${repo_root:} -> the checkout this package lives in (default home of data/).
    OmegaConf.register_new_resolver("repo_root", lambda: str(REPO_ROOT), replace=True)
    # ${uid:} -> a random suffix, the same for the whole process: two runs started in the
    # same second never share a folder.
    OmegaConf.register_new_resolver("uid", lambda: secrets.token_hex(3), use_cache=True, replace=True)
