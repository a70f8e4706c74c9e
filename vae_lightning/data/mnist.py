"""MNIST, Fashion-MNIST and KMNIST: 28x28 grey images in IDX files, decoded through torchvision's
classes.

``download=True`` fetches missing files where there is internet (quickly refused where there is
none); damaged files are named with what is wrong. Batching, splits and normalization: in_memory.py.
"""

import math
import struct
from pathlib import Path

import torch
from torchvision import datasets

from vae_lightning.data.download import fetch
from vae_lightning.data.in_memory import InMemoryImageDataModule
from vae_lightning.errors import UserError, check_bool, check_choice

DATASETS = {
    "mnist": datasets.MNIST,
    "fashion_mnist": datasets.FashionMNIST,
    "kmnist": datasets.KMNIST,
}


def load_split(
    name: str, root: str, train: bool, download: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of one official split.

    Missing files are downloaded (if ``download``) only when a mirror answers within seconds;
    damaged files are named, so a bad copy is never mistaken for a missing one.
    """
    cls = DATASETS[name]
    where = Path(root) / cls.__name__ / "raw"
    fix = f"set data.root=... (or DATA_DIR=...) to a folder holding {cls.__name__}/raw/*-ubyte"
    if Path(root).exists() and not Path(root).is_dir():
        raise UserError(f"data.root={root} is a file, not a folder: {fix}")
    names = {p: (f"{p}-images-idx3-ubyte", f"{p}-labels-idx1-ubyte") for p in ("train", "t10k")}
    if not all((where / f).is_file() for pair in names.values() for f in pair):
        fetch(
            cls.__name__,
            where,
            cls.mirrors,
            download,
            lambda: cls(root, train=train, download=True),
            fix,
        )
    images, labels = (where / f for f in names["train" if train else "t10k"])
    n_images, n_labels = check_idx(images, ndim=3), check_idx(labels, ndim=1)
    if n_images != n_labels:
        raise UserError(
            f"{images} holds {n_images} images but {labels} holds {n_labels} labels: "
            "replace both with a matching pair"
        )
    ds = cls(root, train=train, download=False)
    return ds.data, ds.targets


def check_idx(path: Path, ndim: int) -> int:
    """Number of items in an uncompressed uint8 IDX file; UserError naming the file if it is
    damaged."""
    fix = "delete it (data.download=true fetches it again) or replace it with a good copy"
    size = path.stat().st_size
    with open(path, "rb") as f:
        header = f.read(4 + 4 * ndim)
    if len(header) < 4 + 4 * ndim:
        raise UserError(f"{path} is damaged (only {size} bytes, shorter than an IDX header): {fix}")
    magic, *dims = struct.unpack(f">{1 + ndim}I", header)
    if magic != 0x0800 + ndim:
        raise UserError(
            f"{path} is damaged (magic number 0x{magic:08x}, expected 0x{0x0800 + ndim:08x}): {fix}"
        )
    expected = len(header) + math.prod(dims)
    if size != expected:
        raise UserError(
            f"{path} is damaged (truncated: {size} bytes, its header says {expected}): {fix}"
        )
    return dims[0]


class MNISTDataModule(InMemoryImageDataModule):
    """MNIST, Fashion-MNIST or KMNIST (``name``): 55k/5k train/val split of the training set,
    official 10k test set.

    ``download``: fetch missing files through torchvision (needs internet; offline it fails in
    seconds).
    Other settings: see InMemoryImageDataModule.
    """

    def __init__(
        self, name: str = "mnist", root: str = "data", download: bool = True, **settings
    ) -> None:
        self.name = check_choice("name", name, sorted(DATASETS))
        self.download = check_bool("download", download)
        super().__init__(root=root, **settings)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1, 28, 28)

    @property
    def class_names(self) -> list[str]:
        return list(DATASETS[self.name].classes)

    def load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        return load_split(self.name, self.root, train, self.download)
