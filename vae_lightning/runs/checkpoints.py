"""Checkpoints: written so that a kill cannot corrupt them, and read back (eval, sample, notebooks)
as the source of truth for the model and the data it was trained on.

A checkpoint holds the model's class (``model_class``), its hyperparameters (plain values: the
configs of its parts with their ``_target_``, latent size, likelihood, the data's image shape and
pixel range) and the run's composed config (``run_config``), so ``load_model`` rebuilds any model of
the family (your own included) and ``build_datamodule`` its data without any config file.
Checkpoints written before the model family (class ``VAEModule``, ELBO or IWAE by a flag) load as
the VAE or IWAE they were.
"""

import copy
import math
import os
from pathlib import Path

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from vae_lightning.errors import UserError, first_line, instantiate_component
from vae_lightning.files import writing
from vae_lightning.models import IWAE, VAE, BaseVAE
from vae_lightning.models.base import recorded_class
from vae_lightning.models.likelihoods import range_text

EXAMPLE = "e.g. ckpt_path=outputs/runs/<run>/checkpoints/last.ckpt"


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint whose saved paths follow the run folder: in a moved or copied
    run, the best and last checkpoints it recorded are found in their new place, so ``resume=true``
    continues the run in place (Lightning's own would forget them and start ``last-v1.ckpt``).
    A new run started from another run's checkpoint (``ckpt_path=``, ``continues_run`` False) keeps
    none of that run's records: its best checkpoint is one of its own.

    ``last.ckpt`` is written at the end of every ``every_n_epochs``-th epoch: Lightning 2.6 writes
    it only at a step where it also saves a best checkpoint, so after an epoch that did not improve
    the monitor it kept an older epoch, and a kill lost more than ``every_n_epochs``."""

    continues_run = True

    def __init__(self, *args, every_n_epochs: int | None = None, **kwargs) -> None:
        super().__init__(*args, every_n_epochs=every_n_epochs, **kwargs)
        others = kwargs.get("every_n_train_steps") or kwargs.get("train_time_interval")
        self.last_every_n_epochs = every_n_epochs if every_n_epochs is not None else int(not others)
        self.saved_at_step: int | None = None  # the global step of the newest checkpoint written

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self.saved_at_step = trainer.global_step

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)  # after validation: best, then last
        if (
            self.save_last is True
            and self.last_every_n_epochs >= 1
            and (trainer.current_epoch + 1) % self.last_every_n_epochs == 0
            and not trainer.fast_dev_run
            and self.saved_at_step != trainer.global_step  # nothing written at this step yet
        ):
            name = self.format_checkpoint_name({}, self.CHECKPOINT_NAME_LAST)
            self.last_model_path = name  # before the save: it is part of the saved state
            trainer.save_checkpoint(name, weights_only=False)

    def load_state_dict(self, state_dict: dict) -> None:
        if not self.continues_run:
            return
        saved = state_dict.get("dirpath")
        if saved and self.dirpath and os.path.normpath(saved) != os.path.normpath(self.dirpath):

            def moved(path):
                if not path or not Path(path).is_relative_to(saved):
                    return path
                return str(Path(self.dirpath) / Path(path).relative_to(saved))

            state_dict = {
                **state_dict,
                "dirpath": self.dirpath,
                **{
                    k: moved(state_dict.get(k))
                    for k in ("best_model_path", "kth_best_model_path", "last_model_path")
                },
                "best_k_models": {
                    moved(k): v for k, v in state_dict.get("best_k_models", {}).items()
                },
            }
        super().load_state_dict(state_dict)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file beside the target, fsync, then ``os.replace`` it into place.

    A kill during a save leaves the previous file (e.g. a good ``last.ckpt``) untouched. Lightning's
    own save stages the file in the system temp folder and moves it, which is a copy, not an atomic
    rename, when that folder is on another disk.
    """

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if "://" in str(path):  # remote storage: Lightning's fsspec transaction
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with writing(path), open(tmp, "wb") as f:  # a full disk names the checkpoint
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


TRAINING_KEYS = ("state_dict", "global_step")


def readable_checkpoint(
    path: Path, map_location="cpu", needs=TRAINING_KEYS
) -> tuple[dict | None, str]:
    """(the checkpoint's dict, "") if it loads (weights only) and holds ``needs``, else (None, why
    not): the one place checkpoint files are read (memory-mapped on the CPU)."""
    try:
        ckpt = torch.load(
            path, map_location=map_location, weights_only=True, mmap=str(map_location) == "cpu"
        )
    except Exception as e:  # not a torch file, truncated, pickled foreign objects...
        return None, f"is not a readable checkpoint ({first_line(e)[:120]})"
    missing = [k for k in needs if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        return None, f"is not a vae_lightning checkpoint (no {', '.join(missing)})"
    return ckpt, ""


def read_checkpoint(path: Path, map_location) -> dict:
    """The checkpoint dict; UserError when the file is missing or was not written by
    vae_lightning.train."""
    if not path.exists():
        raise UserError(
            f"ckpt_path={path} does not exist: pass a checkpoint written by training, {EXAMPLE}"
        )
    if path.is_dir():
        raise UserError(f"ckpt_path={path} is a folder: pass a .ckpt file inside it, {EXAMPLE}")
    ckpt, why = readable_checkpoint(
        path, map_location, needs=("state_dict", "hyper_parameters", "run_config")
    )
    if ckpt is None:
        fix = "pass one written by python -m vae_lightning.train" if "vae_lightning" in why else ""
        raise UserError(f"ckpt_path={path} {why}: {fix + ', ' if fix else ''}{EXAMPLE}")
    return ckpt


def apply_overrides(run_config: dict, overrides: dict, path: Path) -> dict:
    """The run config with ``data.*`` overrides applied; ``model.*`` (and anything else) is
    refused."""
    config = copy.deepcopy(run_config)
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if section == "model":
            saved = config.get("model", {})
            for part in name.split("."):
                saved = saved.get(part) if isinstance(saved, dict) else None
            raise UserError(
                f"{key}={value} conflicts with ckpt_path={path}, which fixes the model "
                f"({key}={saved}): drop the override, or train a new model with it"
            )
        if section != "data" or not name:
            raise UserError(
                f"{key}={value} cannot be overridden for a checkpoint: only data.* settings can"
            )
        config["data"][name] = value
    return config


def build_datamodule(run_config: dict, model: BaseVAE | None = None):
    """The run's DataModule from its (resolved) data config; with ``model``, refuse data whose
    image shape or pixel range differs from what the model was trained on."""
    datamodule = instantiate_component(run_config["data"], "data")
    if model is not None:
        trained_shape, shape = list(model.hparams.input_shape), list(datamodule.image_shape)
        if shape != trained_shape:
            raise UserError(
                f"the data has images of shape {shape} but the checkpoint's model was trained on "
                f"{trained_shape}: drop the data.* overrides that change the dataset"
            )
        trained, now = model.hparams.data_range, datamodule.data_range
        if not all(
            math.isclose(a, b, abs_tol=1e-6) for t, n in zip(trained, now) for a, b in zip(t, n)
        ):
            mean, std = run_config["data"].get("mean"), run_config["data"].get("std")
            raise UserError(
                f"data.mean={mean} data.std={std} put pixels in {range_text(*now)} but the "
                f"checkpoint's model was trained on {range_text(*trained)}: drop the "
                "data.mean/data.std overrides"
            )
    return datamodule


def legacy_model(hparams: dict) -> BaseVAE:
    """The VAE or IWAE that a ``VAEModule`` checkpoint (objective=elbo|iwae, iw_k) of before the
    model family was."""
    hparams = dict(hparams)
    objective, k = hparams.pop("objective", "elbo"), hparams.pop("iw_k", 1)
    return IWAE(k=k, **hparams) if objective == "iwae" else VAE(**hparams)


def load_model(
    ckpt_path, map_location="cpu", overrides: dict | None = None
) -> tuple[BaseVAE, dict]:
    """(model in eval mode, run config) from a checkpoint written by ``vae_lightning.train``: the
    class it was trained with, through Lightning's ``load_from_checkpoint`` (``weights_only=True``).

    ``overrides`` maps dotted keys to values, e.g. {"data.root": "/data"}: data settings may change
    (where the files are, batch size, binarization, even the dataset), the model may not.
    """
    path = Path(str(ckpt_path)).expanduser()
    ckpt = read_checkpoint(path, map_location)
    try:
        cls = recorded_class(ckpt)
    except UserError as e:
        raise UserError(
            f"ckpt_path={path} was trained with a model class that cannot be loaded here ({e})"
        ) from None
    try:
        if cls is None:
            model = legacy_model(ckpt["hyper_parameters"])
            model.load_state_dict(ckpt["state_dict"])
            model.on_load_checkpoint(ckpt)
        else:
            model = cls.load_from_checkpoint(path, map_location=map_location, weights_only=True)
    except UserError as e:
        raise UserError(
            f"ckpt_path={path} cannot rebuild its model ({e}): retrain or re-save it"
        ) from None
    except RuntimeError as e:  # load_state_dict: the weights do not fit the rebuilt model
        raise UserError(
            f"ckpt_path={path} does not match its own hyperparameters ({first_line(e)}): retrain "
            "or re-save it"
        ) from None
    config = apply_overrides(model.run_config or {}, overrides or {}, path)
    model.run_config = config
    if overrides:
        # refuse data the model cannot take before anything is computed
        build_datamodule(config, model)
    return model.to(map_location).eval(), config


def requested_overrides(cfg: DictConfig) -> dict:
    """{"data.root": ...} for every data.* (or model.*, refused later) value the user set
    (null = the checkpoint's)."""
    return {
        f"{section}.{k}": v
        for section in ("data", "model")
        if cfg.get(section) is not None
        for k, v in OmegaConf.to_container(cfg[section], resolve=True).items()
        if v is not None
    }


def pick_device(name: str) -> torch.device:
    """eval's and sample's ``device``: auto, cpu, cuda or cuda:N (a device that exists here)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(str(name))
    except RuntimeError:
        raise UserError(
            f"device={name} is not a device: use device=auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={name} but no GPU is visible: use device=cpu (or auto)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(
            f"device={name} but this machine has {torch.cuda.device_count()} GPU(s): "
            "use cuda:0 ... or auto"
        )
    return device


def run_folder(ckpt_path: Path) -> Path:
    """<run> for <run>/checkpoints/x.ckpt, else the checkpoint's own folder."""
    return ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent
