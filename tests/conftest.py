"""Shared fixtures: tiny but valid MNIST IDX files, and a way to run the real entry points."""

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an IDX file (the MNIST format): magic 0x0000 08 <ndim>, big-endian dims, uint8 data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def digit_like_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """28x28 uint8 images with structure a VAE can learn: a class-dependent bar and blob, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = np.zeros((n, 28, 28), np.float32)
    yy, xx = np.mgrid[0:28, 0:28]
    for i, k in enumerate(labels):
        images[i, 4 + 2 * k : 6 + 2 * k, 4:24] = 1.0
        cy, cx = rng.uniform(8, 20, 2)
        images[i] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0)
    images = np.clip(images + rng.normal(0, 0.05, images.shape), 0, 1)
    return (images * 255).round().astype(np.uint8), labels.astype(np.uint8)


def make_mnist_root(root: Path, folder: str = "MNIST", n_train: int = 600, n_test: int = 200) -> Path:
    """A torchvision-layout dataset root (<root>/<folder>/raw/*-ubyte) with small valid files."""
    raw = root / folder / "raw"
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = digit_like_images(n, seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory) -> Path:
    """Root folder holding a 600/200-image MNIST in torchvision's raw layout."""
    return make_mnist_root(tmp_path_factory.mktemp("data"))


# Overrides that make a run take seconds on the tiny data.
TINY = ["data.val_size=100", "data.batch_size=32", "trainer.max_epochs=2", "callbacks.sample_grid.num_samples=16",
        "callbacks.sample_grid.nrow=4", "trainer.log_every_n_steps=5", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false"]


def run_module(module: str, *args: str, cwd: Path = REPO, env: dict | None = None, timeout: int = 600):
    """Run ``python -m module args`` as a user would; returns the CompletedProcess."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def run_train(*args: str, **kw):
    return run_module("vae_lightning.train", *args, **kw)


@pytest.fixture(scope="session")
def latent2_run(tiny_mnist, tmp_path_factory) -> Path:
    """ONE short real training run (2-D latent) shared by the eval, sample and knob tests: its run folder."""
    run_dir = tmp_path_factory.mktemp("latent2") / "run"
    proc = run_train(f"data.root={tiny_mnist}", f"hydra.run.dir={run_dir}", *TINY, "experiment=latent2",
                     "model.hidden_dims=[128,64]", "optimizer.lr=3e-3", "trainer.max_epochs=3", "callbacks.latent_embedding.num_points=100")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir
