"""Bring your own data: images (and labels) in one ``.npz`` or ``.npy`` file.

``.npz``: arrays ``x_train`` and optionally ``y_train``, ``x_test``, ``y_test`` (the keras
convention, as in mnist.npz); ``.npy``: training images only. Images are uint8, or floats in [0, 1];
shaped (N, H, W), (N, H, W, C) or (N, C, H, W) with C = 1, 3 or 4. Labels are integers, -1 where
absent. Without ``x_test``, ``test_size`` training images are held out as the test set - always the
same ones, whatever ``seed``. Batching, splits and normalization: in_memory.py.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vae_lightning.data.in_memory import InMemoryImageDataModule
from vae_lightning.errors import SettingError, UserError, check_int
from vae_lightning.files import reading

HOLD_OUT_SEED = 20_240_601  # the held-out test set never depends on data.seed
CHANNELS = (1, 3, 4)
FORMAT = ".npz (x_train[, y_train, x_test, y_test]) or .npy file"

Split = tuple[torch.Tensor, torch.Tensor]


def hold_out(images: torch.Tensor, labels: torch.Tensor, n: int) -> tuple[Split, Split]:
    """(train, test): ``n`` images drawn as a test set (the same ones on every run: the seed is
    fixed) and the rest."""
    if not n < len(images):
        raise SettingError(
            "test_size",
            n,
            f"must be below the {len(images)} training images the test set is "
            "held out of: lower it, or provide a test set",
        )
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(HOLD_OUT_SEED))
    test, train = order[:n], order[n:].sort().values
    return (images[train], labels[train]), (images[test], labels[test])


def check_class_names(value) -> list[str] | None:
    """None, or a non-empty list of strings (one name per label)."""
    if value is None:
        return None
    if (
        isinstance(value, str)
        or not isinstance(value, Sequence)
        or not value
        or not all(isinstance(v, str) for v in value)
    ):
        raise SettingError(
            "class_names",
            value,
            "must be null or a list of names, one per label, e.g. {key}=[cat,dog]",
        )
    return list(value)


def layout(where: str, shape: Sequence[int]) -> tuple[bool, tuple[int, int, int]]:
    """(channels_last, (C, H, W)) of an image array of ``shape``; UserError if it is none of the
    shapes read."""
    shape = tuple(shape)
    if len(shape) == 3:
        channels_last, chw = False, (1, *shape[1:])
    elif len(shape) == 4 and shape[3] in CHANNELS:
        channels_last, chw = True, (shape[3], shape[1], shape[2])
    elif len(shape) == 4 and shape[1] in CHANNELS:
        channels_last, chw = False, shape[1:]
    else:
        raise UserError(
            f"{where} has shape {list(shape)}: store images as (N, H, W), (N, H, W, C) or "
            "(N, C, H, W) with C = 1, 3 or 4"
        )
    if shape[0] == 0 or 0 in chw:
        raise UserError(f"{where} has shape {list(shape)}: it holds no images")
    return channels_last, chw


def to_images(where: str, array: np.ndarray) -> torch.Tensor:
    """uint8 (N, C, H, W) from a uint8 or float-in-[0, 1] array laid out as ``layout`` reads it."""
    channels_last, _ = layout(where, array.shape)
    if array.dtype == np.bool_:  # masks: True is white
        array = array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            raise UserError(
                f"{where} holds {int(array.size - finite.sum())} NaN or infinite pixels: replace "
                "them (e.g. numpy.nan_to_num) and keep the floats in [0, 1]"
            )
        lo, hi = (float(array.min()), float(array.max()))
        if not 0.0 <= lo <= hi <= 1.0:
            raise UserError(
                f"{where} holds floats in [{lo:g}, {hi:g}]: scale them to [0, 1], "
                "or store uint8 (0..255)"
            )
        array = np.round(array * 255.0).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise UserError(
            f"{where} has dtype {array.dtype}: store uint8 (0..255), or floats in [0, 1]"
        )
    elif array.size and int(array.max()) == 1:  # 0/1 masks (all zeros is black on purpose)
        raise UserError(
            f"{where} is uint8 with values 0 and 1 only, which read as black images "
            "(uint8 means 0..255): store x * 255 as uint8, or x as floats in [0, 1]"
        )
    images = torch.from_numpy(np.ascontiguousarray(array))
    images = (
        images.unsqueeze(1)
        if images.ndim == 3
        else images.permute(0, 3, 1, 2)
        if channels_last
        else images
    )
    return images.contiguous()


def to_labels(where: str, array: np.ndarray | None, n: int) -> torch.Tensor:
    """int64 (n,) labels from an integer array of shape (n,) or (n, 1); all -1 when ``array`` is
    None."""
    if array is None:
        return torch.full((n,), -1, dtype=torch.int64)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]  # keras' cifar10 stores (N, 1)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise UserError(
            f"{where} is {array.dtype} of shape {list(array.shape)}: "
            "store integer labels of shape (N,)"
        )
    if len(array) != n:
        raise UserError(
            f"{where} holds {len(array)} labels for {n} images: store one label per image"
        )
    if len(array) and array.min() < -1:
        raise UserError(f"{where} holds label {array.min()}: labels are 0, 1, ... (-1: unlabeled)")
    return torch.from_numpy(array.astype(np.int64))


class ArrayDataModule(InMemoryImageDataModule):
    """Images (and labels) from one .npz/.npy file (``path``): train/val split of the training
    arrays, test set from x_test/y_test or else ``test_size`` held-out training images.
    ``class_names``: names of the labels.

    Other settings: see InMemoryImageDataModule (no ``download``: the file is yours).
    """

    def __init__(
        self,
        path: str,
        test_size: int = 1000,
        class_names: Sequence[str] | None = None,
        val_size: int = 1000,
        **settings,
    ) -> None:
        self.path = str(path)
        if not Path(self.path).exists():
            raise SettingError(
                "path", path, f"does not exist: point data.path at a {FORMAT}", plain=True
            )
        if not Path(self.path).is_file() or Path(self.path).suffix.lower() not in (".npz", ".npy"):
            raise SettingError(
                "path",
                path,
                f"is not a .npz or .npy file: point data.path at a {FORMAT}, "
                "e.g. one written by numpy.savez(path, x_train=images, y_train=labels)",
                plain=True,
            )
        self.test_size = check_int("test_size", test_size, low=1, example=1000)
        self._class_names = check_class_names(class_names)
        self._arrays: dict[str, np.ndarray | None] = {}  # arrays read from the file, each once
        self._loaded: tuple[Split, Split] | None = None  # (train, test), until setup has split them
        if self.path.lower().endswith(".npy"):
            shape = self._read(lambda: np.load(self.path, mmap_mode="r").shape)  # the header only
        else:
            shape = self._array("x_train").shape
        self._image_shape = layout(f"{self.path}: x_train", shape)[1]
        super().__init__(root=str(Path(self.path).parent), val_size=val_size, **settings)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self._image_shape

    @property
    def class_names(self) -> list[str] | None:
        return self._class_names

    def _read(self, get):
        """``get()``, with numpy's complaints about an unreadable file as one-line UserErrors."""
        fix = f"point data.path at a {FORMAT} holding numeric arrays (no pickled objects)"
        with reading(self.path, "cannot be read", fix):
            return get()

    def _array(self, key: str) -> np.ndarray | None:
        """The array ``key`` of the file (None if absent), read once."""
        if key not in self._arrays:
            self._arrays[key] = self._read(lambda: self._load_member(key))
        return self._arrays[key]

    def _load_member(self, key: str) -> np.ndarray | None:
        if self.path.lower().endswith(".npy"):
            return np.load(self.path) if key == "x_train" else None
        with np.load(self.path) as f:
            if "x_train" not in f.files:
                raise UserError(
                    f"{self.path} has no array x_train (it holds: "
                    f"{', '.join(f.files) or 'nothing'}): save the training images as x_train, "
                    "e.g. numpy.savez(path, x_train=images, y_train=labels)"
                )
            return f[key] if key in f.files else None

    def _splits_from_file(self) -> tuple[Split, Split]:
        x_train, x_test = self._array("x_train"), self._array("x_test")
        train = to_images(f"{self.path}: x_train", x_train)
        train = train, to_labels(f"{self.path}: y_train", self._array("y_train"), len(train))
        if x_test is None:
            if self._array("y_test") is not None:
                raise UserError(
                    f"{self.path} has y_test but no x_test: save the test images as x_test, "
                    "or drop y_test"
                )
            return hold_out(*train, self.test_size)
        test = to_images(f"{self.path}: x_test", x_test)
        if test.shape[1:] != train[0].shape[1:]:
            raise UserError(
                f"{self.path}: x_test holds images of shape {list(test.shape[1:])} but x_train "
                f"{list(train[0].shape[1:])} (as C, H, W): store both at one size"
            )
        return train, (test, to_labels(f"{self.path}: y_test", self._array("y_test"), len(test)))

    def load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if self._loaded is None:
            loaded = self._splits_from_file()
            labels = torch.cat([loaded[0][1], loaded[1][1]])
            if (
                self._class_names is not None
                and len(labels)
                and labels.max() >= len(self._class_names)
            ):
                raise SettingError(
                    "class_names",
                    self._class_names,
                    f"names {len(self._class_names)} classes but "
                    f"{self.path} holds label {labels.max()}: give one name per label",
                )
            self._loaded, self._arrays = loaded, {}
        return self._loaded[0 if train else 1]

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        self._loaded = None  # the splits hold the data now
