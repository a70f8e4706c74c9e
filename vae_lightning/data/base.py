"""The data interface: what the model, callbacks, eval, sample and notebooks may ask of a
DataModule.

A dataset is a component: ``conf/data/<name>.yaml`` names its class with ``_target_``. Any
LightningDataModule that subclasses ``ImageDataModule`` and provides the members below works with
every network and entry point; ``InMemoryImageDataModule`` (in_memory.py) provides all of them for a
dataset that fits in memory, so a new dataset of that kind only implements ``load`` (see mnist.py).

    image_shape -> (C, H, W)        known once constructed, before any split is set up: the model is
                                    built from it before training starts
    data_range  -> (lo, hi)         lists of C floats: the interval each channel's normalized pixels
                                    lie in; the likelihood and the display of images follow it
    pixel_levels -> int | None      the evenly spaced values a pixel takes in that interval: 256
                                    for 8-bit images (the default), 2 once binarized, None for
                                    continuous data; discrete likelihoods need 256
    class_names -> list[str] | None names of the integer labels; None for unlabeled data
                                    (labels are -1)
    loader(split, batch_size=None)  the batches of 'train', 'val' or 'test' in a fixed order, each
                                    (x, y): x float (B, C, H, W) normalized, y int64 (B,)
    examples(split, n, seed)        (x, y) of n images of a split drawn at random (fixed by seed)
    + Lightning's prepare_data / setup / train_dataloader / val_dataloader / test_dataloader

Settings are checked in the constructor (``SettingError``), so a bad value is refused before any
data is read.
"""

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence

import lightning as L
import torch

SPLITS = ("train", "val", "test")


def pixel_range(mean: Sequence[float], std: Sequence[float]) -> tuple[list[float], list[float]]:
    """Per channel, the interval that pixels in [0, 1] occupy after (x - mean) / std."""
    return [(0.0 - m) / s for m, s in zip(mean, std)], [(1.0 - m) / s for m, s in zip(mean, std)]


class ImageDataModule(L.LightningDataModule, ABC):
    """The interface above; see the module docstring."""

    @property
    @abstractmethod
    def image_shape(self) -> tuple[int, int, int]: ...

    @property
    @abstractmethod
    def data_range(self) -> tuple[list[float], list[float]]: ...

    @property
    def pixel_levels(self) -> int | None:
        return 256

    @property
    def class_names(self) -> list[str] | None:
        return None

    @abstractmethod
    def loader(
        self, split: str, batch_size: int | None = None
    ) -> Iterable[tuple[torch.Tensor, torch.Tensor]]: ...

    @abstractmethod
    def examples(self, split: str, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]: ...
