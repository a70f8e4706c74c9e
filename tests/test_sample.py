"""Sampling: every mode's PNG grid (size, pixel range, what each row shows) and the refusals."""

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from torch.distributions import Normal

from tests.conftest import REPO, run_module
from tests.test_model import mlp
from vae_lightning import sample
from vae_lightning.errors import UserError
from vae_lightning.models import VAE
from vae_lightning.runs.checkpoints import load_model


def sample_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("sample", overrides=list(overrides))


def grid_size(rows: int, cols: int, padding: int = 2) -> tuple[int, int]:
    """(width, height) of a torchvision grid of 28x28 images."""
    return cols * (28 + padding) + padding, rows * (28 + padding) + padding


def png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))


@pytest.mark.parametrize(
    "mode,n,nrow,rows,cols",
    [
        ("prior", 256, None, 16, 16),
        ("interpolate", 40, 8, 5, 8),
        ("manifold", 100, None, 10, 10),
        ("traverse", 256, None, 2, 16),
    ],
)
def test_each_mode_writes_a_grid_of_28x28_images(latent2_run, tmp_path, mode, n, nrow, rows, cols):
    out = tmp_path / f"{mode}.png"
    extra = [] if nrow is None else [f"nrow={nrow}"]
    ckpt = latent2_run / "checkpoints" / "last.ckpt"
    sample.run(
        sample_cfg(
            f"ckpt_path={ckpt}", f"mode={mode}", f"n={n}", f"out={out}", "device=cpu", *extra
        )
    )
    image = Image.open(out)
    assert image.size == grid_size(rows, cols)  # traverse: one row per latent dim (2 here)
    pixels = png(out)
    assert pixels.min() >= 0 and pixels.max() <= 255 and pixels.std() > 1  # not a blank image


def test_decoded_grids_are_in_the_unit_range_and_rows_follow_the_mode(latent2_run):
    module, config = load_model(latent2_run / "checkpoints" / "last.ckpt")
    g = torch.Generator().manual_seed(0)
    z = sample.manifold(module, n=12, nrow=4)
    q = Normal(0.0, 1.0)
    assert torch.allclose(z[:4, 0], q.icdf(torch.linspace(0.05, 0.95, 4)))  # z1 left to right
    # z2 top (high) to bottom
    assert torch.allclose(z[::4, 1], q.icdf(torch.linspace(0.95, 0.05, 3)))
    lines = sample.interpolate(module, n=18, nrow=6, generator=g, config=config).view(3, 6, 2)
    steps = lines.diff(dim=1)
    # straight, evenly spaced
    assert torch.allclose(steps, steps[:, :1].expand_as(steps), atol=1e-5)
    walk = sample.traverse(module, n=32, nrow=16, generator=g, config=config, span=3.0).view(
        2, 16, 2
    )
    # one dim moves by 2 * span, the other stays
    assert torch.allclose(walk[0, -1] - walk[0, 0], torch.tensor([6.0, 0.0])) or torch.allclose(
        walk[0, -1] - walk[0, 0], torch.tensor([0.0, 6.0])
    )
    images = module.to_unit_range(module.decode(torch.randn(64, 2) * 3))
    assert images.shape == (64, 1, 28, 28) and images.min() >= 0 and images.max() <= 1


def test_manifold_needs_a_2d_latent_space(tmp_path):
    module = VAE(latent_dim=3, net=mlp(16))
    ckpt = tmp_path / "three.ckpt"
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "run_config": {"data": {"mean": 0.0, "std": 1.0}},
        },
        ckpt,
    )
    with pytest.raises(
        UserError,
        match=r"mode=manifold needs a 2-D latent .*model.latent_dim=3: .*experiment=latent2",
    ):
        sample.run(sample_cfg(f"ckpt_path={ckpt}", "mode=manifold", f"out={tmp_path}/m.png"))
    with pytest.raises(
        UserError, match=r"mode='walk' is not one of prior, interpolate, manifold, traverse"
    ):
        sample.run(sample_cfg(f"ckpt_path={ckpt}", "mode=walk"))


def test_sample_entry_point_writes_the_tutorials_16x16_grid_into_the_run_folder(
    latent2_run, tmp_path
):
    proc = run_module(
        "vae_lightning.sample", f"ckpt_path={latent2_run}/checkpoints/last.ckpt", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert Image.open(latent2_run / "sample_prior.png").size == grid_size(16, 16)
    assert list(tmp_path.iterdir()) == []  # nothing in the current folder, no Hydra run folder


@pytest.mark.parametrize(
    "n,nrow,message",
    [
        (0, None, r"n=0 must be >= 1, e.g. n=256"),
        (16, 0, r"nrow=0 must be >= 1 \(or null for sqrt\(n\)\)"),
    ],
)
def test_grid_size_is_checked_before_anything_loads(n, nrow, message):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(
        {"mode": "prior", "n": n, "nrow": nrow, "ckpt_path": "/nonexistent.ckpt"}
    )
    with pytest.raises(UserError, match=message):
        sample.run(cfg)


def test_out_may_name_a_folder(latent2_run, tmp_path):
    proc = run_module(
        "vae_lightning.sample",
        f"ckpt_path={latent2_run}/checkpoints/last.ckpt",
        f"out={tmp_path}",
        "mode=interpolate",
        "n=16",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert Image.open(tmp_path / "sample_interpolate.png").size == grid_size(4, 4)
