"""Load a trained VAEModule and the config it was trained with, for eval, sampling and notebooks."""

import copy
import math
from pathlib import Path

import torch
from hydra.utils import instantiate

from vae_lightning.errors import UserError
from vae_lightning.module import VAEModule

EXAMPLE = "e.g. ckpt_path=outputs/runs/<run>/checkpoints/last.ckpt"


def read_checkpoint(path: Path, map_location) -> dict:
    """The checkpoint dict; UserError when the file is missing or was not written by vae_lightning.train."""
    if not path.exists():
        raise UserError(f"ckpt_path={path} does not exist: pass a checkpoint written by training, {EXAMPLE}")
    if path.is_dir():
        raise UserError(f"ckpt_path={path} is a folder: pass a .ckpt file inside it, {EXAMPLE}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # not a torch file, truncated, pickled foreign objects...
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise UserError(f"ckpt_path={path} is not a readable checkpoint ({reason}): {EXAMPLE}") from None
    missing = [k for k in ("state_dict", "hyper_parameters", "run_config") if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise UserError(
            f"ckpt_path={path} is not a vae_lightning checkpoint (no {', '.join(missing)}): "
            f"pass one written by python -m vae_lightning.train, {EXAMPLE}"
        )
    return ckpt


def apply_overrides(run_config: dict, overrides: dict, path: Path, data_range) -> dict:
    """The run config with ``data.*`` overrides applied; ``model.*`` or range-changing ones are refused."""
    config = copy.deepcopy(run_config)
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        saved = config.get(section, {}).get(name) if isinstance(config.get(section), dict) else None
        if section == "model":
            raise UserError(
                f"{key}={value} conflicts with ckpt_path={path}, which fixes the model ({key}={saved}): "
                "drop the override, or train a new model with it"
            )
        if section != "data" or not name:
            raise UserError(f"{key}={value} cannot be overridden for a checkpoint: only data.* settings can")
        config["data"][name] = value
    mean, std = float(config["data"]["mean"]), float(config["data"]["std"])
    lo, hi = (0 - mean) / std, (1 - mean) / std
    trained = [float(v) for v in data_range]
    if not (math.isclose(lo, trained[0], abs_tol=1e-6) and math.isclose(hi, trained[1], abs_tol=1e-6)):
        raise UserError(
            f"data.mean={mean:g} data.std={std:g} put pixels in [{lo:g}, {hi:g}] but ckpt_path={path} was trained "
            f"on [{trained[0]:g}, {trained[1]:g}]: drop the data.mean/data.std overrides"
        )
    return config


def load_module(ckpt_path, map_location="cpu", overrides: dict | None = None) -> tuple[VAEModule, dict]:
    """(module in eval mode, run config) from a checkpoint written by ``vae_lightning.train``.

    ``overrides`` maps dotted keys to values, e.g. {"data.root": "/data"}: data settings may change
    (where the files are, batch size, binarization, even the dataset), the model may not.
    """
    path = Path(str(ckpt_path)).expanduser()
    ckpt = read_checkpoint(path, map_location)
    module = VAEModule(**ckpt["hyper_parameters"])
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise UserError(f"ckpt_path={path} does not match its own hyperparameters ({first}): retrain or re-save it") from None
    module.on_load_checkpoint(ckpt)
    config = apply_overrides(module.run_config or {}, overrides or {}, path, module.hparams.data_range)
    module.run_config = config
    return module.to(map_location).eval(), config


def build_datamodule(run_config: dict):
    """The run's MNISTDataModule from its (resolved) data config."""
    return instantiate(run_config["data"])
