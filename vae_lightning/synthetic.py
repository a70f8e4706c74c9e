"""A tiny but valid MNIST-format dataset (IDX files in torchvision's layout) for tests and notebooks."""

import struct
from pathlib import Path

import numpy as np


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
    raw = Path(root) / folder / "raw"
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = digit_like_images(n, seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return Path(root)
