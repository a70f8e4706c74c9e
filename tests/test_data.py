"""The DataModule: real torchvision loading of IDX files, split, normalization, batches,
sharding."""

import pytest
import torch

from tests.conftest import make_mnist_root
from vae_lightning.data.in_memory import BatchLoader, ImageBatches
from vae_lightning.data.mnist import MNISTDataModule
from vae_lightning.errors import UserError


def index_loader(n: int, batch_size: int, **kw) -> BatchLoader:
    """A BatchLoader over the indices 0..n-1 themselves (each batch's x holds its indices / 255)."""
    images = torch.arange(n, dtype=torch.uint8 if n < 256 else torch.int32).view(n, 1, 1, 1)
    return BatchLoader(ImageBatches(images, torch.arange(n)), batch_size, **kw)


def indices(loader: BatchLoader) -> list[int]:
    return [int(i) for _, y in loader for i in y]


def test_loads_idx_files_through_torchvision_and_splits(tiny_mnist):
    dm = MNISTDataModule(root=str(tiny_mnist), val_size=100, batch_size=32, download=False)
    dm.setup()
    (train_x, train_y), (val_x, _), (test_x, _) = (
        dm.split("train"),
        dm.split("val"),
        dm.split("test"),
    )
    assert (
        train_x.shape == (500, 1, 28, 28)
        and train_x.dtype == torch.uint8
        and train_y.shape == (500,)
    )
    assert val_x.shape == (100, 1, 28, 28) and test_x.shape == (200, 1, 28, 28)
    assert dm.image_shape == (1, 28, 28) and dm.class_names[3] == "3 - three"
    # train and val are disjoint parts of the training set
    train_rows = {bytes(r) for r in train_x.flatten(1).numpy()}
    assert not any(bytes(r) in train_rows for r in val_x.flatten(1).numpy())


def test_split_is_fixed_by_the_seed(tiny_mnist):
    a = MNISTDataModule(root=str(tiny_mnist), val_size=100, seed=3, download=False)
    b = MNISTDataModule(root=str(tiny_mnist), val_size=100, seed=3, download=False)
    c = MNISTDataModule(root=str(tiny_mnist), val_size=100, seed=4, download=False)
    assert torch.equal(a.split("val")[0], b.split("val")[0])
    assert not torch.equal(a.split("val")[0], c.split("val")[0])


def test_batches_are_normalized_floats_covering_every_sample_once(tiny_mnist):
    dm = MNISTDataModule(
        root=str(tiny_mnist), val_size=100, batch_size=32, mean=0.5, std=0.5, download=False
    )
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(loader) == len(batches) == 16  # ceil(500 / 32)
    x, y = batches[0]
    assert x.shape == (32, 1, 28, 28) and x.dtype == torch.float32 and y.shape == (32,)
    assert dm.data_range == ([-1.0], [1.0])
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.min() < -0.99 and x.max() > 0.5
    seen = torch.cat([b[0] for b in batches])
    assert seen.shape[0] == 500
    raw = dm.split("train")[0].float() / 255 * 2 - 1
    assert torch.allclose(seen.sum(0), raw.sum(0), atol=1e-3)  # a permutation of the training set


def test_validation_and_test_come_in_batches_of_eval_batch_size(tiny_mnist):
    dm = MNISTDataModule(root=str(tiny_mnist), val_size=100, batch_size=32, download=False)
    assert dm.eval_batch_size == 1000  # the default: 5000 validation images in 5 steps, not 79
    assert [len(x) for x, _ in dm.val_dataloader()] == [100]
    assert [len(x) for x, _ in dm.test_dataloader()] == [200]
    dm = MNISTDataModule(
        root=str(tiny_mnist), val_size=100, batch_size=32, eval_batch_size=None, download=False
    )
    assert [len(x) for x, _ in dm.val_dataloader()] == [32, 32, 32, 4]  # null: batch_size
    assert len(dm.train_dataloader()) == 16  # training is not affected
    with pytest.raises(UserError, match=r"^eval_batch_size=0 must be >= 1 \(or null\)"):
        MNISTDataModule(root=str(tiny_mnist), eval_batch_size=0, download=False)


def test_shuffle_changes_per_epoch_and_repeats_for_the_same_epoch():
    loader = index_loader(100, 10, shuffle=True, seed=1)
    sampler = loader.batch_sampler.sampler  # Lightning calls its set_epoch at each epoch's start
    sampler.set_epoch(0)
    e0 = indices(loader)
    sampler.set_epoch(1)
    e1 = indices(loader)
    sampler.set_epoch(0)
    assert e0 == indices(loader) and e0 != e1
    assert sorted(e0) == list(range(100)) == sorted(e1)
    assert indices(index_loader(100, 10)) == list(range(100))  # val/test: in order


def test_ranks_get_disjoint_equal_shards():
    shards = []
    for rank in range(3):
        loader = index_loader(100, 8, shuffle=True, seed=0, rank=rank, world_size=3)
        loader.batch_sampler.sampler.set_epoch(5)
        shards.append(indices(loader))
        assert len(loader) == 5  # ceil(33 / 8): every rank takes the same number of steps
    assert all(len(sh) == 33 for sh in shards)
    assert len(set(shards[0]) | set(shards[1]) | set(shards[2])) == 99


def test_a_resumed_loader_serves_the_rest_of_the_epoch():
    done = {"n": 3}
    loader = index_loader(50, 10, shuffle=True, seed=2, batches_done=lambda: done["n"])
    loader.batch_sampler.sampler.set_epoch(4)
    whole = indices(loader)
    # what Lightning stores in a checkpoint taken 3 batches into the epoch
    state = loader.state_dict()
    assert state == {"batches_done": 3}
    resumed = index_loader(50, 10, shuffle=True, seed=2)
    resumed.load_state_dict(state)  # what Lightning hands back on resume, before the epoch starts
    resumed.batch_sampler.sampler.set_epoch(4)
    assert indices(resumed) == whole[30:]
    assert indices(resumed) == whole  # only that once: the next epoch is whole again


def test_other_datasets_use_their_own_folders(tmp_path):
    root = make_mnist_root(tmp_path, "FashionMNIST", n_train=50, n_test=20)
    dm = MNISTDataModule(name="fashion_mnist", root=str(root), val_size=10, download=False)
    assert dm.split("test")[0].shape == (20, 1, 28, 28) and dm.class_names[0] == "T-shirt/top"
    with pytest.raises(UserError, match="KMNIST not found in .*KMNIST/raw.*data.root"):
        MNISTDataModule(name="kmnist", root=str(root), val_size=10, download=False).setup()


def test_missing_files_fail_fast_with_one_line(tmp_path):
    dm = MNISTDataModule(root=str(tmp_path / "nowhere"), download=True)
    with pytest.raises(UserError) as err:
        dm.prepare_data()
    msg = str(err.value)
    assert "\n" not in msg and "nowhere" in msg and "DATA_DIR" in msg and "data.root" in msg
