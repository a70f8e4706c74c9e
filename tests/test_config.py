"""Hydra composition: every documented override lands where the code reads it."""

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.conftest import REPO
from vae_lightning.errors import UserError, instantiate_component
from vae_lightning.resolvers import register_resolvers
from vae_lightning.runs.build import build_model
from vae_lightning.runs.preflight import check_run_settings

register_resolvers()


def check_config(cfg):
    """What train.py refuses before a run starts: its own settings,
    then every component as it is built."""
    check_run_settings(cfg)
    datamodule = instantiate_component(cfg.data, "data")
    return datamodule, build_model(cfg, datamodule)


def cfg_with(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_defaults_are_the_tutorials():
    cfg = cfg_with()
    assert (
        cfg.model.latent_dim == 20
        and list(cfg.model.net.hidden_dims) == [512, 256]
        and cfg.model.likelihood._target_.endswith(".Bernoulli")
    )
    assert cfg.model.net._target_.endswith("MLPNet") and cfg.model.net.activation == "relu"
    assert (
        cfg.data.batch_size == 64
        and cfg.data.name == "mnist"
        and (cfg.data.mean, cfg.data.std) == (0.0, 1.0)
    )
    assert cfg.optimizer._target_ == "torch.optim.Adam" and cfg.optimizer.lr == 1e-3
    assert cfg.trainer.max_epochs == 50 and cfg.callbacks.sample_grid.num_samples == 256
    datamodule, model = check_config(cfg)
    assert sum(
        p.numel() for p in model.net.parameters()
    ) == 1_082_680 and datamodule.image_shape == (1, 28, 28)


@pytest.mark.parametrize(
    "override,key,value",
    [
        ("model.latent_dim=2", "model.latent_dim", 2),
        ("model/likelihood=gaussian", "model.likelihood.variance", 0.5),
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
        ("model/net=conv", "model.net._target_", "vae_lightning.models.networks.ConvNet"),
        ("model.net.hidden_dims=[1024,512]", "model.net.hidden_dims", [1024, 512]),
        ("model.net.activation=tanh", "model.net.activation", "tanh"),
    ],
)
def test_override_lands(override, key, value):
    cfg = cfg_with(override)
    assert OmegaConf.select(cfg, key) == value
    check_config(cfg)


def test_network_is_chosen_by_config_and_its_settings_reach_it():
    from vae_lightning.models.networks import ConvNet, MLPNet

    _, model = check_config(
        cfg_with("model/net=conv", "model.net.channels=[8,16]", "model.latent_dim=5")
    )
    assert isinstance(model.net, ConvNet) and model.net.fc_mu.out_features == 5
    assert [m.out_channels for m in model.net.encoder if isinstance(m, torch.nn.Conv2d)] == [8, 16]
    _, model = check_config(cfg_with("model.net.hidden_dims=[1024,512]"))
    assert isinstance(model.net, MLPNet) and model.net.encoder[0][0].out_features == 1024


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["model/net=conv", "model.net.channels=[8,16,32]"],
            r"^model.net.channels=\[8, 16, 32\] halves the 28x28 images 3",
        ),
        (
            ["model.net.hidden_dims=[]"],
            r"^model.net.hidden_dims=\[\] must be a non-empty list of positive integers",
        ),
        (["model.net.activation=swish"], r"^model.net.activation='swish' is not one of relu, tanh"),
        (["data.std=inf"], r"^data.std=inf must be a finite number > 0"),
        (["data.mean=nan"], r"^data.mean=nan must be a finite number"),
        (["model.kl_weight=nan"], r"^model.kl_weight=nan must be a finite number >= 0"),
        (["optimizer.lr=nan"], r"^optimizer.lr=nan must be a finite number > 0"),
    ],
)
def test_components_refuse_their_own_bad_settings_under_their_config_path(overrides, message):
    with pytest.raises(UserError, match=message):
        check_config(cfg_with(*overrides))


def test_data_root_defaults_to_DATA_DIR_then_repo_data(monkeypatch):
    monkeypatch.delenv("DATA_DIR", raising=False)
    assert cfg_with().data.root == str(REPO / "data")
    monkeypatch.setenv("DATA_DIR", "/mnt/datasets")
    assert cfg_with().data.root == "/mnt/datasets"


def test_optimizer_config_instantiates_a_working_optimizer():
    opt = instantiate(cfg_with("optimizer.lr=5e-4").optimizer)([torch.nn.Parameter(torch.zeros(3))])
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["lr"] == 5e-4


def test_the_tutorials_mismatch_is_refused_before_training():
    with pytest.raises(
        UserError,
        match=r"likelihood=bernoulli .*\[-1, 1\].*data.mean=0 data.std=1.*likelihood=gaussian",
    ):
        check_config(cfg_with("data.mean=0.5", "data.std=0.5"))
    check_config(cfg_with("model/likelihood=gaussian", "data.mean=0.5", "data.std=0.5"))


def test_a_setting_the_network_does_not_take_is_named_with_its_fix():
    with pytest.raises(
        UserError,
        match=r"^model.net.hidden_dims=\[512, 256\] is not a setting of ConvNet: drop it "
        r"with ~model.net.hidden_dims, or fix its name",
    ):
        check_config(cfg_with("model.net._target_=vae_lightning.models.networks.ConvNet"))
    with pytest.raises(UserError, match=r"^data.bogus=1 is not a setting of MNISTDataModule"):
        check_config(cfg_with("+data.bogus=1"))
    # the fix it names works
    _, model = check_config(
        cfg_with(
            "model.net._target_=vae_lightning.models.networks.ConvNet", "~model.net.hidden_dims"
        )
    )
    assert type(model.net).__name__ == "ConvNet"


@pytest.mark.parametrize(
    "override,key,value",
    [
        ("debug=fdr", "trainer.fast_dev_run", True),
        ("trainer.fast_dev_run=true", "trainer.fast_dev_run", True),  # no + needed
        ("debug=overfit", "trainer.overfit_batches", 3),
        ("debug=limit", "trainer.limit_train_batches", 20),
        (
            "debug=profiler",
            "trainer.profiler._target_",
            "lightning.pytorch.profilers.SimpleProfiler",
        ),
        ("callbacks/early_stopping=on", "callbacks.early_stopping.monitor", "val/loss"),
        (
            "callbacks/progress_bar=rich",
            "callbacks.progress_bar._target_",
            "vae_lightning.callbacks.progress.RichProgressBar",
        ),
        (
            "callbacks/progress_bar=tqdm",
            "callbacks.progress_bar._target_",
            "lightning.pytorch.callbacks.TQDMProgressBar",
        ),
    ],
)
def test_debug_presets_and_optional_callbacks_compose(override, key, value):
    cfg = cfg_with(override)
    assert OmegaConf.select(cfg, key) == value
    assert "early_stopping" not in cfg_with().callbacks  # off by default
    # Rich, redrawn every 20 steps rather than Lightning's every step
    bar = cfg_with().callbacks.progress_bar
    assert bar._target_ == "vae_lightning.callbacks.progress.RichProgressBar"
    assert bar.refresh_rate == 20
    check_config(cfg)


@pytest.mark.parametrize("native_bf16", [True, False])
def test_precision_defaults_to_bf16_mixed_on_cpus_with_native_bf16_only(monkeypatch, native_bf16):
    from vae_lightning import resolvers

    monkeypatch.setattr(resolvers, "cpu_has_bf16", lambda: native_bf16)
    cpu = "bf16-mixed" if native_bf16 else "32-true"
    assert cfg_with("trainer.accelerator=cpu").trainer.precision == cpu
    assert cfg_with("trainer=gpu").trainer.precision == "32-true"  # GPUs keep fp32 until measured
    assert cfg_with("trainer=ddp", "trainer.accelerator=gpu").trainer.precision == "32-true"
    assert (
        cfg_with("trainer.accelerator=cpu", "trainer.precision=32-true").trainer.precision
        == "32-true"
    )
