"""Checks on the composed config, run before any data is loaded or any training step is taken.

Each failure is a UserError whose one-line message names the setting and the fix.
"""

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from vae_lightning.errors import UserError
from vae_lightning.module import check_loss_matches_data


def _get(cfg: DictConfig, key: str):
    return OmegaConf.select(cfg, key, default=None)


def check_number(cfg: DictConfig, key: str, *, integer: bool = False, low=None, low_ok: bool = True, hint: str = ""):
    """``key`` must be a number (an int if ``integer``) and >= low (> low if not low_ok)."""
    value = _get(cfg, key)
    kind = "an integer" if integer else "a number"
    is_number = isinstance(value, int) if integer else isinstance(value, (int, float))
    bound = "" if low is None else f" {'>=' if low_ok else '>'} {low}"
    if isinstance(value, bool) or not is_number:
        raise UserError(f"{key}={value!r} must be {kind}{bound}{hint}")
    if low is not None and (value < low or (value == low and not low_ok)):
        raise UserError(f"{key}={value} must be{bound}{hint}")


def validate(cfg: DictConfig) -> None:
    """Raise UserError for the first setting that cannot work."""
    check_number(cfg, "model.latent_dim", integer=True, low=1, hint=", e.g. model.latent_dim=20")
    hidden = _get(cfg, "model.hidden_dims")
    if not hidden or not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden):
        raise UserError(f"model.hidden_dims={hidden} must be a non-empty list of positive integers, e.g. [512,256]")
    check_number(cfg, "model.kl_weight", low=0, hint=" (1 is the ELBO, other values give a beta-VAE)")
    check_number(cfg, "model.kl_warmup_epochs", integer=True, low=0, hint=" (0 = no warm-up), e.g. model.kl_warmup_epochs=10")
    check_number(cfg, "model.free_bits", low=0, hint=" nats per latent dim (0 = off), e.g. model.free_bits=0.5")
    if not isinstance(_get(cfg, "data.binarize"), bool):
        raise UserError(f"data.binarize={_get(cfg, 'data.binarize')!r} must be true or false")
    check_number(cfg, "optimizer.lr", low=0, low_ok=False, hint=", e.g. optimizer.lr=1e-3")
    check_number(cfg, "data.batch_size", integer=True, low=1, hint=", e.g. data.batch_size=64")
    check_number(cfg, "data.val_size", integer=True, low=1, hint=", e.g. data.val_size=5000")
    check_number(cfg, "data.mean")
    check_number(cfg, "data.std", low=0, low_ok=False, hint=", e.g. data.std=1")
    check_number(cfg, "trainer.max_epochs", integer=True, low=-1, hint=" (-1 trains until stopped), e.g. trainer.max_epochs=50")
    check_number(cfg, "seed", integer=True, hint=", e.g. seed=42")
    if _get(cfg, "resume") is not None and not isinstance(_get(cfg, "resume"), bool):
        raise UserError(f"resume={_get(cfg, 'resume')!r} must be true or false")
    mean, std = float(cfg.data.mean), float(cfg.data.std)
    check_loss_matches_data(_get(cfg, "model.loss"), ((0 - mean) / std, (1 - mean) / std))  # also: a known loss
    root = Path(str(cfg.data.root))
    if root.exists() and not root.is_dir():
        raise UserError(f"data.root={root} is a file, not a folder: point data.root (or DATA_DIR) at the data folder")


def checkpoint_to_resume(cfg: DictConfig) -> str | None:
    """``ckpt_path``, or with ``resume=true`` this run folder's ``checkpoints/last.ckpt``; UserError if missing."""
    path = _get(cfg, "ckpt_path")
    if cfg.get("resume"):
        if path:
            raise UserError(f"resume=true continues this run folder's last.ckpt, ckpt_path={path} another: drop one of them")
        last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        if not last.is_file():
            raise UserError(f"resume=true but {last} does not exist: add hydra.run.dir=<the folder of the run to continue>")
        return str(last)
    if path and not Path(str(path)).is_file():
        raise UserError(f"ckpt_path={path} is not a file: point it at a checkpoint, e.g. <run>/checkpoints/last.ckpt")
    return path
