"""CIFAR-10: 32x32 colour images in the python pickle batches of ``cifar-10-batches-py/``
(torchvision's layout).

The batches are read here rather than through ``datasets.CIFAR10``, whose md5 check refuses every
copy but the official one. ``download=True`` fetches missing files through torchvision where there
is internet (quickly refused where there is none); damaged files are named with what is wrong.
Batching, splits and normalization: in_memory.py.
"""

import pickle
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets

from vae_lightning.data.download import fetch
from vae_lightning.data.in_memory import InMemoryImageDataModule
from vae_lightning.errors import UserError, check_bool
from vae_lightning.files import reading

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILE = "test_batch"
# The label names of batches.meta; torchvision only reads them from that file, once a dataset is
# built.
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def read_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of one pickled batch; UserError naming the
    file if damaged."""
    fix = "delete it (data.download=true fetches the dataset again) or replace it with a good copy"
    with reading(path, "is damaged (not a CIFAR batch)", fix), open(path, "rb") as f:
        batch = pickle.load(f, encoding="latin1")  # truncated, not a pickle, not a dict...
        data, labels = np.asarray(batch["data"]), np.asarray(batch["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise UserError(
            f"{path} is damaged (data is {data.dtype} {list(data.shape)}, "
            f"expected uint8 [N, 3072]): {fix}"
        )
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(
            f"{path} is damaged ({len(data)} images but labels of shape "
            f"{list(labels.shape)}): {fix}"
        )
    if len(labels) and not 0 <= labels.min() <= labels.max() < len(CLASSES):
        raise UserError(
            f"{path} is damaged (labels {labels.min()}..{labels.max()}, expected 0..9): {fix}"
        )
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(
        labels.astype(np.int64)
    )


def load_split(root: str, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of the official training (50k) or test
    (10k) split.

    A missing folder is downloaded (if ``download``); a folder missing only some batches is named,
    so a partial copy is never mistaken for a missing one.
    """
    where = Path(root) / FOLDER
    fix = f"set data.root=... (or DATA_DIR=...) to a folder holding {FOLDER}/"
    if Path(root).exists() and not Path(root).is_dir():
        raise UserError(f"data.root={root} is a file, not a folder: {fix}")
    files = TRAIN_FILES + [TEST_FILE]
    if not any((where / f).is_file() for f in files):
        fetch(
            "CIFAR10",
            where,
            [datasets.CIFAR10.url],
            download,
            lambda: datasets.CIFAR10(root, train=train, download=True),
            fix,
        )
    for f in files:
        if not (where / f).is_file():
            raise UserError(
                f"{where / f} is missing (the folder holds only part of CIFAR-10): "
                f"delete {where} (data.download=true fetches it again) or copy the file there"
            )
    parts = [read_batch(where / f) for f in (TRAIN_FILES if train else [TEST_FILE])]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


class CIFAR10DataModule(InMemoryImageDataModule):
    """CIFAR-10: 45k/5k train/val split of the training set, official 10k test set.

    ``download``: fetch the files through torchvision when they are missing (needs internet).
    Other settings: see InMemoryImageDataModule.
    """

    def __init__(
        self, root: str = "data", val_size: int = 5000, download: bool = True, **settings
    ) -> None:
        self.download = check_bool("download", download)
        super().__init__(root=root, val_size=val_size, **settings)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (3, 32, 32)

    @property
    def class_names(self) -> list[str]:
        return list(CLASSES)

    def load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        return load_split(self.root, train, self.download)
