"""Image files in folders: ``<root>/train/`` and optionally ``<root>/test/``, each holding class
subfolders (torchvision's ImageFolder layout: label = index of the sorted subfolder name) or the
images themselves (unlabeled: labels -1).

.png .jpg .jpeg .gif .webp files are decoded by torchvision.io, .bmp by Pillow (torchvision.io reads
no BMP), to ``channels`` (1: grey, 3: RGB) and resized to ``image_size`` if it is set; otherwise all
images must have one size. Without test/, ``test_size`` training images are held out as the test
set, always the same ones (arrays.hold_out). Every image is decoded once, when the data is first
loaded. Batching, splits and normalization: in_memory.py.
"""

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms.v2 import functional as F

from vae_lightning.data.arrays import Split, hold_out
from vae_lightning.data.in_memory import InMemoryImageDataModule
from vae_lightning.errors import SettingError, UserError, check_int
from vae_lightning.files import reading

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
LAYOUT = "train/ (and optionally test/) holding class subfolders of images, or images"


def visible(path: Path) -> bool:
    return not path.name.startswith(".")


def scan(folder: Path) -> tuple[list[Path], list[int], list[str] | None]:
    """Image files, labels and class names of ``folder``: its class subfolders (searched
    recursively, labels 0, 1, ... in sorted order) or, if it has none, the images directly in it
    (labels -1, no class names)."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and visible(p))
    if not classes:
        files = sorted(
            p
            for p in folder.iterdir()
            if p.is_file() and visible(p) and p.suffix.lower() in SUFFIXES
        )
        if not files:
            raise UserError(
                f"{folder} holds no image files ({' '.join(SUFFIXES)}) and no class subfolders: "
                "add some"
            )
        return files, [-1] * len(files), None
    files, labels = [], []
    for k, name in enumerate(classes):
        found = sorted(
            p
            for p in (folder / name).rglob("*")
            if p.is_file()
            and p.suffix.lower() in SUFFIXES
            and all(visible(Path(part)) for part in p.relative_to(folder).parts)
        )
        if not found:
            raise UserError(
                f"{folder / name} holds no image files ({' '.join(SUFFIXES)}): "
                "add some or remove the folder"
            )
        files += found
        labels += [k] * len(found)
    return files, labels, classes


def decode(path: Path, channels: int) -> torch.Tensor:
    """uint8 (channels, H, W) image of one file; UserError naming the file if it cannot be
    decoded."""
    with reading(path, "cannot be decoded as an image", "remove or replace it"):
        if path.suffix.lower() == ".bmp":
            with Image.open(path) as image:
                image = F.pil_to_tensor(image.convert("L" if channels == 1 else "RGB"))
        else:
            image = decode_image(
                read_file(str(path)),
                mode=ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB,
            )
    if image.ndim == 4:
        image = image[0]  # an animated GIF: its first frame
    # 16-bit PNG; no alpha
    image = F.to_dtype(image, torch.uint8, scale=True)[: 3 if image.shape[0] >= 3 else 1]
    if image.shape[0] != channels:  # GIF and WebP decode to RGB whatever the mode
        image = F.rgb_to_grayscale(image) if channels == 1 else image.expand(3, -1, -1)
    return image


def check_image_size(value) -> tuple[int, int] | None:
    """None, one positive integer (square) or [height, width]."""
    if value is None:
        return None
    values = (
        list(value)
        if isinstance(value, Sequence) and not isinstance(value, str)
        else [value, value]
    )
    if len(values) != 2 or any(
        isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values
    ):
        raise SettingError(
            "image_size",
            value,
            "must be null (the files' own size), an integer or [height, width], e.g. {key}=[64,64]",
        )
    return values[0], values[1]


class ImageFolderDataModule(InMemoryImageDataModule):
    """Image files under ``root`` (see the module docstring): train/val split of train/, test set
    from test/ or else ``test_size`` held-out training images. ``channels``: 1 (grey) or 3 (RGB).
    ``image_size``: null (all files one size), an integer or [height, width] to resize every image
    to.

    Other settings: see InMemoryImageDataModule (no ``download``: the files are yours).
    """

    def __init__(
        self,
        root: str,
        channels: int = 3,
        image_size=None,
        test_size: int = 1000,
        val_size: int = 1000,
        **settings,
    ) -> None:
        if isinstance(channels, bool) or channels not in (1, 3):
            raise SettingError("channels", channels, "must be 1 (grey) or 3 (RGB)")
        self.channels = channels
        self.image_size = check_image_size(image_size)
        self.test_size = check_int("test_size", test_size, low=1, example=1000)
        folder = Path(str(root))
        if not folder.is_dir():
            problem = "is a file, not a folder" if folder.exists() else "does not exist"
            raise SettingError(
                "root", root, f"{problem}: point data.root at a folder with {LAYOUT}", plain=True
            )
        if not (folder / "train").is_dir():
            raise SettingError(
                "root",
                root,
                f"has no train/ folder: data.root must be a folder with {LAYOUT}",
                plain=True,
            )
        self._train = scan(folder / "train")
        self._first = self._train[0][0]
        self._image_shape = (
            channels,
            *(self.image_size or decode(self._first, channels).shape[1:]),
        )
        self._loaded: tuple[Split, Split] | None = None  # (train, test), until setup has split them
        super().__init__(root=str(root), val_size=val_size, **settings)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self._image_shape

    @property
    def class_names(self) -> list[str] | None:
        return self._train[2]

    def _decode_all(self, files: list[Path]) -> torch.Tensor:
        images = torch.empty((len(files), *self.image_shape), dtype=torch.uint8)
        for i, path in enumerate(files):
            image = decode(path, self.channels)
            if self.image_size:
                image = F.resize(image, list(self.image_size), antialias=True)
            elif image.shape[1:] != images.shape[2:]:
                h, w = images.shape[2:]
                raise UserError(
                    f"{path} is {image.shape[1]}x{image.shape[2]} pixels (height x width) "
                    f"but {self._first} "
                    f"is {h}x{w}: set data.image_size=[{h},{w}] to resize every image to one size"
                )
            images[i] = image
        return images

    def _test_set(self, folder: Path) -> Split:
        files, labels, classes = scan(folder)
        train_classes = self._train[2]
        if (classes is None) != (train_classes is None) or (
            classes and not set(classes) <= set(train_classes)
        ):
            raise UserError(
                f"{folder} has class folders {classes or 'none'} but {folder.parent / 'train'} has "
                f"{train_classes or 'none'}: give test/ the layout and class folders of train/"
            )
        labels = [train_classes.index(classes[k]) for k in labels] if classes else labels
        return self._decode_all(files), torch.tensor(labels, dtype=torch.int64)

    def load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if self._loaded is None:
            files, labels, _ = self._train
            train_set = self._decode_all(files), torch.tensor(labels, dtype=torch.int64)
            test = Path(self.root) / "test"
            self._loaded = (
                (train_set, self._test_set(test))
                if test.is_dir()
                else hold_out(*train_set, self.test_size)
            )
        return self._loaded[0 if train else 1]

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        self._loaded = None  # the splits hold the data now
