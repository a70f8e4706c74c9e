"""Hydra composition: every documented override lands where the code reads it."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.conftest import REPO
from vae_lightning.config import validate
from vae_lightning.errors import UserError
from vae_lightning.resolvers import register_resolvers

register_resolvers()


def cfg_with(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_defaults_are_the_tutorials():
    cfg = cfg_with()
    assert cfg.model.latent_dim == 20 and list(cfg.model.hidden_dims) == [512, 256] and cfg.model.loss == "bce"
    assert cfg.data.batch_size == 64 and cfg.data.name == "mnist" and (cfg.data.mean, cfg.data.std) == (0.0, 1.0)
    assert cfg.optimizer._target_ == "torch.optim.Adam" and cfg.optimizer.lr == 1e-3
    assert cfg.trainer.max_epochs == 50 and cfg.callbacks.sample_grid.num_samples == 256
    validate(cfg)


@pytest.mark.parametrize(
    "override,key,value",
    [
        ("model.latent_dim=2", "model.latent_dim", 2),
        ("model.loss=mse", "model.loss", "mse"),
        ("optimizer.lr=5e-4", "optimizer.lr", 5e-4),
        ("optimizer=adamw", "optimizer._target_", "torch.optim.AdamW"),
        ("data=fashion_mnist", "data.name", "fashion_mnist"),
        ("data=kmnist", "data.name", "kmnist"),
        ("data.root=/somewhere/else", "data.root", "/somewhere/else"),
        ("data.batch_size=128", "data.batch_size", 128),
        ("trainer.max_epochs=3", "trainer.max_epochs", 3),
        ("trainer.accelerator=cpu", "trainer.accelerator", "cpu"),
        ("trainer.accelerator=gpu", "trainer.accelerator", "gpu"),
        ("trainer.accelerator=auto", "trainer.accelerator", "auto"),
        ("seed=7", "seed", 7),
        ("scheduler=cosine", "scheduler.T_max", 50),
        ("experiment=latent2", "model.latent_dim", 2),
    ],
)
def test_override_lands(override, key, value):
    cfg = cfg_with(override)
    assert OmegaConf.select(cfg, key) == value
    validate(cfg)


def test_data_root_defaults_to_DATA_DIR_then_repo_data(monkeypatch):
    monkeypatch.delenv("DATA_DIR", raising=False)
    assert cfg_with().data.root == str(REPO / "data")
    monkeypatch.setenv("DATA_DIR", "/mnt/datasets")
    assert cfg_with().data.root == "/mnt/datasets"


def test_optimizer_config_instantiates_a_working_optimizer():
    import torch

    opt = instantiate(cfg_with("optimizer.lr=5e-4").optimizer)([torch.nn.Parameter(torch.zeros(3))])
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["lr"] == 5e-4


def test_the_tutorials_mismatch_is_refused_before_training():
    with pytest.raises(UserError, match=r"model.loss=bce .*\[-1, 1\].*data.mean=0 data.std=1.*model.loss=mse"):
        validate(cfg_with("model.loss=bce", "data.mean=0.5", "data.std=0.5"))
    validate(cfg_with("model.loss=mse", "data.mean=0.5", "data.std=0.5"))
