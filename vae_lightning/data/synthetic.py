"""Tiny but valid datasets for tests and notebooks: MNIST-format IDX files in torchvision's layout,
and colour images as CIFAR-10 batches, a .npz file or an image folder."""

import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an IDX file (the MNIST format): magic 0x0000 08 <ndim>, big-endian dims, uint8 data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def digit_like_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """28x28 uint8 images with structure a VAE can learn: a class-dependent bar and blob, plus
    noise."""
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


def make_mnist_root(
    root: Path, folder: str = "MNIST", n_train: int = 600, n_test: int = 200
) -> Path:
    """A torchvision-layout dataset root (<root>/<folder>/raw/*-ubyte) with small valid files."""
    raw = Path(root) / folder / "raw"
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = digit_like_images(n, seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return Path(root)


# Colour datasets in the other formats the data components read: CIFAR-10 batches, .npz arrays,
# image folders.

PALETTE = (
    np.array(
        [
            [230, 25, 75],
            [60, 180, 75],
            [255, 225, 25],
            [0, 130, 200],
            [245, 130, 48],
            [145, 30, 180],
            [70, 240, 240],
            [240, 50, 230],
            [210, 245, 60],
            [128, 128, 128],
        ]
    )
    / 255.0
)


def colour_images(
    n: int, seed: int, size: int | tuple[int, int] = 32
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 3, H, W) with structure a VAE can learn: a bar in a class colour at a
    class-dependent height and a grey blob, plus noise; labels (N,) in 0..9."""
    h, w = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = np.zeros((n, 3, h, w), np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    thick = max(1, h // 14)
    for i, k in enumerate(labels):
        top = (h * (2 + 2 * k)) // 28
        images[i, :, top : top + thick, w // 7 : w - w // 7] = PALETTE[k][:, None, None]
        cy, cx = rng.uniform(0.3, 0.7, 2) * (h, w)
        images[i] += 0.8 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (min(h, w) / 8) ** 2))
    images = np.clip(images + rng.normal(0, 0.05, images.shape), 0, 1)
    return (images * 255).round().astype(np.uint8), labels


CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def make_cifar_root(root: Path, n_train: int = 500, n_test: int = 100) -> Path:
    """A torchvision-layout CIFAR-10 root (<root>/cifar-10-batches-py/) with small valid python
    batches: data_batch_1..5 (``n_train`` images in all), test_batch and batches.meta."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = colour_images(n_train + n_test, seed=2)
    parts = np.array_split(np.arange(n_train), 5) + [np.arange(n_train, n_train + n_test)]
    for name, idx in zip([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], parts):
        batch = {
            "batch_label": name,
            "data": images[idx].reshape(len(idx), -1),
            "labels": labels[idx].tolist(),
            "filenames": [f"{name}_{i}.png" for i in idx],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {"label_names": CIFAR10_CLASSES, "num_cases_per_batch": len(parts[0]), "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return Path(root)


def make_npz(
    path: Path, n_train: int = 300, n_test: int = 100, channels_last: bool = True, size: int = 16
) -> Path:
    """A .npz of uint8 colour images (keras convention): x_train, y_train and, if ``n_test``,
    x_test, y_test; images (N, H, W, 3) if ``channels_last`` else (N, 3, H, W)."""
    images, labels = colour_images(n_train + n_test, seed=3, size=size)
    if channels_last:
        images = images.transpose(0, 2, 3, 1)
    arrays = {"x_train": images[:n_train], "y_train": labels[:n_train]}
    if n_test:
        arrays |= {"x_test": images[n_train:], "y_test": labels[n_train:]}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return Path(path)


def make_image_folder(
    root: Path,
    n_per_class: int = 20,
    classes: list[str] | None = ("a", "b", "c"),
    size: int | tuple[int, int] = 16,
    test: bool = True,
) -> Path:
    """PNG files in ImageFolder layout: <root>/train/<class>/*.png (``classes`` None:
    <root>/train/*.png) and, if ``test``, half as many in <root>/test/ likewise."""
    splits = [("train", n_per_class)] + ([("test", max(1, n_per_class // 2))] if test else [])
    for s, (split, n) in enumerate(splits):
        for k, name in enumerate(classes or [""]):
            folder = Path(root) / split / name
            folder.mkdir(parents=True, exist_ok=True)
            images, _ = colour_images(n, seed=10 * s + k + 4, size=size)
            # class colour
            images[:, :, : max(1, images.shape[2] // 8)] = (PALETTE[k % 10] * 255).round()[
                :, None, None
            ]
            for i, image in enumerate(images):
                Image.fromarray(image.transpose(1, 2, 0)).save(folder / f"{k}_{i}.png")
    return Path(root)
