"""MNIST-format data held in memory as uint8 and served as normalized batches by indexing.

The images are decoded once through torchvision's dataset classes (so ``download=True``
fetches them where there is internet); each batch is one index into a uint8 tensor and one
vectorized normalization, with no per-sample transforms or worker processes.
"""

import math
import socket
import struct
from pathlib import Path
from urllib.parse import urlsplit

import lightning as L
import torch
from torchvision import datasets

from vae_lightning.errors import UserError

DATASETS = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST, "kmnist": datasets.KMNIST}
DOWNLOAD_TIMEOUT_S = 10
EVAL_BINARIZE_SEED = 1234  # val/test are binarized once with this seed, whatever data.seed is


def load_split(name: str, root: str, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
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
        if not download:
            raise UserError(f"{cls.__name__} not found in {where} and data.download=false: {fix}")
        hosts = [urlsplit(m).hostname for m in cls.mirrors]
        if not any(_reachable(m) for m in cls.mirrors):
            raise UserError(f"{cls.__name__} not found in {where} and no download server answers ({', '.join(hosts)}): {fix}")
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        try:
            cls(root, train=train, download=True)
        except Exception as e:  # mirror down, disk full...
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"{cls.__name__} not found in {where} and the download failed ({reason}): {fix}") from None
        finally:
            socket.setdefaulttimeout(previous)
    images, labels = (where / f for f in names["train" if train else "t10k"])
    n_images, n_labels = check_idx(images, ndim=3), check_idx(labels, ndim=1)
    if n_images != n_labels:
        raise UserError(
            f"{images} holds {n_images} images but {labels} holds {n_labels} labels: replace both with a matching pair"
        )
    ds = cls(root, train=train, download=False)
    return ds.data, ds.targets


def check_idx(path: Path, ndim: int) -> int:
    """Number of items in an uncompressed uint8 IDX file; UserError naming the file if it is damaged."""
    fix = "delete it (data.download=true fetches it again) or replace it with a good copy"
    size = path.stat().st_size
    with open(path, "rb") as f:
        header = f.read(4 + 4 * ndim)
    if len(header) < 4 + 4 * ndim:
        raise UserError(f"{path} is damaged (only {size} bytes, shorter than an IDX header): {fix}")
    magic, *dims = struct.unpack(f">{1 + ndim}I", header)
    if magic != 0x0800 + ndim:
        raise UserError(f"{path} is damaged (magic number 0x{magic:08x}, expected 0x{0x0800 + ndim:08x}): {fix}")
    expected = len(header) + math.prod(dims)
    if size != expected:
        raise UserError(f"{path} is damaged (truncated: {size} bytes, its header says {expected}): {fix}")
    return dims[0]


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether the host of ``url`` accepts a connection within ``timeout`` seconds (no internet: False, fast)."""
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)), timeout).close()
    except OSError:
        return False
    return True


class IndexBatches:
    """Yields index tensors: one batch each, a new permutation per epoch, this rank's shard only.

    Lightning calls ``set_epoch`` at the start of each epoch (as for a DistributedSampler), so
    the order depends only on (seed, epoch) and a resumed run sees the same batches.
    Under DDP every rank takes an equal, disjoint share: no sample is seen twice in an epoch.
    """

    def __init__(self, n, batch_size, shuffle=False, seed=0, rank=0, world_size=1, drop_last=False):
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch = 0
        self.device = torch.device("cpu")  # where the index batches live (the data's device)
        self.skip = 0  # batches of this epoch already trained on before a mid-epoch resume (used once)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _shard_size(self) -> int:
        return self.n // self.world_size

    def __len__(self) -> int:
        size = self._shard_size()
        return size // self.batch_size if self.drop_last else -(-size // self.batch_size)

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        order = order[: self._shard_size() * self.world_size][self.rank :: self.world_size].to(self.device)
        start, self.skip = self.skip, 0
        for i in range(start, len(self)):
            yield order[i * self.batch_size : (i + 1) * self.batch_size]


class TensorBatches:
    """An iterable of (images, labels) batches drawn from in-memory uint8 images.

    Shaped like a DataLoader whose sampler yields whole batches (``batch_sampler`` None), so
    Lightning finds the sampler, calls its ``set_epoch`` and leaves the loader otherwise alone.
    """

    batch_sampler = None

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        sampler: IndexBatches,
        mean: float,
        std: float,
        binarize: bool = False,
    ):
        self.images, self.labels, self.sampler = images, labels, sampler
        self.mean, self.std, self.binarize = mean, std, binarize

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        generator = None
        if self.binarize:  # fresh pixels every epoch, fixed by (seed, epoch, rank) so a resumed run repeats them
            s = self.sampler
            generator = torch.Generator(self.images.device).manual_seed((s.seed * 100_003 + s.epoch) * 1_009 + s.rank)
        for idx in self.sampler:
            idx = idx.to(self.images.device)
            images = self.images[idx]
            if generator is not None:
                images = binarize(images, generator)
            yield normalize(images, self.mean, self.std), self.labels[idx]


def binarize(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """uint8 grey levels -> uint8 {0, 255}: each pixel white with probability (its value / 255)."""
    return torch.bernoulli(images.float().div_(255.0), generator=generator).mul_(255.0).to(torch.uint8)


def normalize(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 (B, H, W) -> float (B, 1, H, W) in ((0 - mean) / std, (1 - mean) / std)."""
    x = images.unsqueeze(1).float().div_(255.0)
    if mean != 0.0 or std != 1.0:
        x = x.sub_(mean).div_(std)
    return x


class MNISTDataModule(L.LightningDataModule):
    """MNIST, Fashion-MNIST or KMNIST: train/val split of the training set, official test set.

    ``batch_size`` is the global batch: under DDP each of the world_size ranks serves
    batch_size // world_size samples per step. ``binarize``: dynamic binarization, the standard
    setting for likelihoods on MNIST: training pixels are drawn as Bernoulli(grey level) each time a
    batch is served; val and test are binarized once, with a fixed seed, when the data is set up.
    """

    image_shape = (1, 28, 28)

    def __init__(
        self,
        name: str = "mnist",
        root: str = "data",
        batch_size: int = 64,
        val_size: int = 5000,
        mean: float = 0.0,
        std: float = 1.0,
        download: bool = True,
        seed: int = 0,
        binarize: bool = False,
        on_device: bool | None = None,
    ) -> None:
        super().__init__()
        if name not in DATASETS:
            raise UserError(f"data.name={name!r} is not one of {sorted(DATASETS)}")
        self.name, self.root, self.batch_size, self.val_size = name, str(root), batch_size, val_size
        self.mean, self.std, self.download, self.seed = float(mean), float(std), download, seed
        self.binarize = bool(binarize)
        self.on_device = on_device
        self._splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._device_splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._resume_batches = 0

    @property
    def data_range(self) -> tuple[float, float]:
        """The interval normalized pixels lie in: black and white after (x - mean) / std."""
        return (0.0 - self.mean) / self.std, (1.0 - self.mean) / self.std

    def prepare_data(self) -> None:
        for train in (True, False):
            load_split(self.name, self.root, train, self.download)

    def setup(self, stage: str | None = None) -> None:
        if self._splits:
            return
        images, labels = load_split(self.name, self.root, True, self.download)
        if not 0 < self.val_size < len(images):
            raise UserError(f"data.val_size={self.val_size} must lie between 1 and {len(images) - 1} (training set size - 1)")
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.seed))
        val, train = order[: self.val_size], order[self.val_size :]
        self._splits["train"] = images[train], labels[train]
        self._splits["val"] = images[val], labels[val]
        self._splits["test"] = load_split(self.name, self.root, False, self.download)
        if self.binarize:
            for name, offset in (("val", 0), ("test", 1)):
                generator = torch.Generator().manual_seed(EVAL_BINARIZE_SEED + offset)
                self._splits[name] = binarize(self._splits[name][0], generator), self._splits[name][1]

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images and labels of 'train', 'val' or 'test' (val/test already binarized if ``binarize``)."""
        self.setup()
        return self._splits[name]

    def _resident(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The split where batches are cut: on the accelerator when ``on_device`` (None: whenever the
        trainer runs on one), so a step needs no host-to-device copy and no host sync."""
        strategy = getattr(self.trainer, "strategy", None)
        device = strategy.root_device if strategy is not None else torch.device("cpu")
        on_device = device.type != "cpu" if self.on_device is None else self.on_device
        if not on_device or device.type == "cpu":
            return self.split(name)
        if name not in self._device_splits:
            self._device_splits[name] = tuple(t.to(device) for t in self.split(name))
        return self._device_splits[name]

    def _rank_and_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def loader(self, name: str, shuffle: bool = False, drop_last: bool = False) -> TensorBatches:
        rank, world = self._rank_and_world()
        if self.batch_size % world:
            raise UserError(
                f"data.batch_size={self.batch_size} is the global batch and must divide by the "
                f"{world} devices: use a multiple of {world}"
            )
        images, labels = self._resident(name)
        sampler = IndexBatches(len(images), self.batch_size // world, shuffle, self.seed, rank, world, drop_last)
        sampler.device = images.device
        return TensorBatches(images, labels, sampler, self.mean, self.std, self.binarize and name == "train")

    def train_dataloader(self) -> TensorBatches:
        loader = self.loader("train", shuffle=True)
        loader.sampler.skip, self._resume_batches = self._resume_batches, 0
        return loader

    def state_dict(self) -> dict:
        """Saved in checkpoints: how many batches of the current epoch were trained on, so a resume from
        a mid-epoch checkpoint (Ctrl-C) serves exactly the rest of that epoch's order."""
        progress = getattr(getattr(self.trainer, "fit_loop", None), "epoch_loop", None)
        if progress is None:
            return {}
        done = progress.batch_progress.current.completed
        return {"train_batches_done": done if done < self.trainer.num_training_batches else 0}

    def load_state_dict(self, state_dict: dict) -> None:
        self._resume_batches = int(state_dict.get("train_batches_done", 0))

    def val_dataloader(self) -> TensorBatches:
        return self.loader("val")

    def test_dataloader(self) -> TensorBatches:
        return self.loader("test")
