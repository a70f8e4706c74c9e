"""The template is open: a network or a dataset is a component chosen by config, and train, eval and
sample work with any of them, rebuilding the model from the checkpoint alone."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import TINY, run_module, run_train
from vae_lightning.data.synthetic import make_cifar_root, make_npz

CUSTOM = "tests.custom_net.ResidualMLPNet"
QUICK = [*TINY, "callbacks.latent_embedding.num_points=50"]


def train(run_dir: Path, *args: str) -> dict:
    proc = run_train(f"hydra.run.dir={run_dir}", *QUICK, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((run_dir / "metrics.json").read_text())


def evaluate(run_dir: Path, *args: str) -> dict:
    proc = run_module(
        "vae_lightning.eval",
        f"ckpt_path={run_dir}/checkpoints/last.ckpt",
        "eval.iw_samples=20",
        *args,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((run_dir / "eval.json").read_text())


def sample(run_dir: Path, out: Path, *args: str) -> np.ndarray:
    proc = run_module(
        "vae_lightning.sample", f"ckpt_path={run_dir}/checkpoints/last.ckpt", f"out={out}", *args
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return np.asarray(Image.open(out).convert("RGB"))


def test_a_network_from_a_file_under_tests_is_selected_by_its_target_alone(tiny_mnist, tmp_path):
    run = tmp_path / "custom"
    result = train(
        run,
        f"data.root={tiny_mnist}",
        f"model.net._target_={CUSTOM}",
        "model.net.hidden_dims=[128,128]",
        "trainer.max_epochs=3",
    )
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)  # plain values only
    assert ckpt["hyper_parameters"]["net"] == {
        "_target_": CUSTOM,
        "hidden_dims": [128, 128],
        "activation": "relu",
    }
    # its own layers, two residual blocks
    assert any(k.startswith("net.down.1.") for k in ckpt["state_dict"])
    # it learned (untrained: ~784 log 2)
    assert result["metrics"]["val/loss"] < 0.6 * 784 * math.log(2)

    evaluated = evaluate(run)  # rebuilt from the checkpoint alone: no network named anywhere
    assert evaluated["iw_nll"] <= evaluated["neg_elbo"] + 1.0 and evaluated["latent_dim"] == 20
    assert evaluated["neg_elbo"] == pytest.approx(result["metrics"]["test/loss"], rel=0.05)
    grid = sample(run, tmp_path / "custom.png", "n=16")
    assert grid.shape == (4 * 30 + 2, 4 * 30 + 2, 3) and grid.std() > 1


def test_the_conv_net_trains_evaluates_and_samples(tiny_mnist, tmp_path):
    run = tmp_path / "conv"
    result = train(
        run,
        f"data.root={tiny_mnist}",
        "model/net=conv",
        "model.net.channels=[16,32]",
        "trainer.max_epochs=3",
    )
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["net"]["_target_"] == "vae_lightning.models.networks.ConvNet"
    assert ckpt["state_dict"]["net.encoder.0.weight"].shape == (16, 1, 4, 4)  # a convolution
    assert result["metrics"]["val/loss"] < 0.6 * 784 * math.log(2)
    evaluated = evaluate(run, "eval.split=val")
    assert evaluated["split"] == "val" and evaluated["iw_nll"] <= evaluated["neg_elbo"] + 1.0
    for mode in ("prior", "interpolate", "traverse"):
        grid = sample(run, tmp_path / f"{mode}.png", f"mode={mode}", "n=32", "nrow=8")
        assert grid.shape == (4 * 30 + 2, 8 * 30 + 2, 3) and grid.std() > 1, mode


def colourful(grid: np.ndarray) -> float:
    """Mean spread between the R, G and B values of each pixel (0 for a grey image)."""
    return float((grid.max(axis=2).astype(int) - grid.min(axis=2)).mean())


def test_the_conv_net_learns_cifar_format_colour_images(tmp_path):
    root, run = make_cifar_root(tmp_path / "data", n_train=600, n_test=100), tmp_path / "cifar"
    result = train(
        run,
        "data=cifar10",
        f"data.root={root}",
        "data.val_size=100",
        "model/net=conv",
        "model.net.channels=[16,32]",
        "trainer.max_epochs=3",
    )
    curves = json.loads((run / "metrics.json").read_text())["metrics"]
    # 32x32x3 pixels
    assert result["epochs"] == 3 and curves["val/loss"] < 0.75 * 3072 * math.log(2), curves
    grid = sample(run, tmp_path / "cifar.png", "n=16")
    # 32x32 images, in colour
    assert grid.shape == (4 * 34 + 2, 4 * 34 + 2, 3) and colourful(grid) > 10
    evaluated = evaluate(run)
    assert evaluated["data"] == "CIFAR10DataModule" and evaluated["n_images"] == 100


def test_bring_your_own_arrays_with_per_channel_normalization(tmp_path):
    path, run = (
        make_npz(tmp_path / "mine.npz", n_train=400, n_test=100, size=16),
        tmp_path / "arrays",
    )
    mean, std = "[0.3,0.4,0.5]", "[0.25,0.25,0.3]"
    train(
        run,
        "data=arrays",
        f"data.path={path}",
        "data.val_size=50",
        f"data.mean={mean}",
        f"data.std={std}",
        "model/likelihood=gaussian",
        "model/net=conv",
        "model.net.channels=[16,32]",
        "model.latent_dim=8",
    )
    hp = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]
    assert hp["input_shape"] == [3, 16, 16]
    assert hp["data_range"][0] == pytest.approx([-1.2, -1.6, -5 / 3]) and hp["data_range"][
        1
    ] == pytest.approx([2.8, 2.4, 5 / 3])
    grid = sample(run, tmp_path / "arrays.png", "n=16")
    assert grid.shape == (4 * 18 + 2, 4 * 18 + 2, 3) and colourful(grid) > 5
    evaluated = evaluate(run)
    assert (
        evaluated["n_images"] == 100
        and evaluated["likelihood"] == "Gaussian"
        and math.isfinite(evaluated["iw_nll"])
    )


def test_bce_on_per_channel_normalized_colour_is_refused_before_training(tmp_path):
    path = make_npz(tmp_path / "mine.npz", n_train=100, n_test=20, size=16)
    proc = run_train(
        f"hydra.run.dir={tmp_path / 'r'}",
        "data=arrays",
        f"data.path={path}",
        "data.mean=[0.5,0.4,0.3]",
        "data.std=0.5",
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: model/likelihood=bernoulli needs pixels in [0, 1] but data.mean/data.std put "
        "them in [-1, 1] [-0.8, 1.2] [-0.6, 1.4] (per channel): use data.mean=0 data.std=1, "
        "or model/likelihood=gaussian (or a discrete one) for other ranges"
    )
    assert not (tmp_path / "r" / "checkpoints").exists()
