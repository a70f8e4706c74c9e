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
    # ${run_label:} -> what names a run in the loggers and the sweep summary: the command line's settings that
    # shape the result (model, optimizer, data, seed...; no paths), e.g. "model.latent_dim=2 optimizer.lr=0.001".
    OmegaConf.register_new_resolver("run_label", run_label, replace=True)
    # ${tags_dict:${tags}} -> {"tag": "true", ...}: MLflow's tags are a dict, W&B's a list.
    OmegaConf.register_new_resolver("tags_dict", lambda tags: {str(t): "true" for t in tags or []}, replace=True)


SHAPES_RESULT = ("model", "optimizer", "scheduler", "data", "seed", "experiment", "trainer.max_epochs", "trainer.precision")
NOT_RESULT = ("root", "path", "download", "on_device")


def run_label() -> str:
    """The command line's overrides that shape the result, or the run folder's name when there are none."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return ""
    hydra = HydraConfig.get()
    chosen = []
    for override in hydra.overrides.task:
        key = override.split("=", 1)[0].lstrip("+~")
        if key.startswith(SHAPES_RESULT) and not key.rsplit(".", 1)[-1].startswith(NOT_RESULT):
            chosen.append(override)
    return " ".join(chosen) or Path(hydra.runtime.output_dir).name
