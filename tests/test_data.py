"""The DataModule: real torchvision loading of IDX files, split, normalization, batches, sharding."""

import pytest
import torch

from tests.conftest import make_mnist_root
from vae_lightning.data import IndexBatches, MNISTDataModule
from vae_lightning.errors import UserError


def test_loads_idx_files_through_torchvision_and_splits(tiny_mnist):
    dm = MNISTDataModule(root=str(tiny_mnist), val_size=100, batch_size=32, download=False)
    dm.setup()
    (train_x, train_y), (val_x, _), (test_x, _) = dm.split("train"), dm.split("val"), dm.split("test")
    assert train_x.shape == (500, 28, 28) and train_x.dtype == torch.uint8 and train_y.shape == (500,)
    assert val_x.shape == (100, 28, 28) and test_x.shape == (200, 28, 28)
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
    dm = MNISTDataModule(root=str(tiny_mnist), val_size=100, batch_size=32, mean=0.5, std=0.5, download=False)
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(loader) == len(batches) == 16  # ceil(500 / 32)
    x, y = batches[0]
    assert x.shape == (32, 1, 28, 28) and x.dtype == torch.float32 and y.shape == (32,)
    assert dm.data_range == (-1.0, 1.0)
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.min() < -0.99 and x.max() > 0.5
    seen = torch.cat([b[0] for b in batches])
    assert seen.shape[0] == 500
    raw = dm.split("train")[0].unsqueeze(1).float() / 255 * 2 - 1
    assert torch.allclose(seen.sum(0), raw.sum(0), atol=1e-3)  # a permutation of the training set


def test_shuffle_changes_per_epoch_and_repeats_for_the_same_epoch():
    s = IndexBatches(100, 10, shuffle=True, seed=1)
    s.set_epoch(0)
    e0 = torch.cat(list(s))
    s.set_epoch(1)
    e1 = torch.cat(list(s))
    s.set_epoch(0)
    assert torch.equal(e0, torch.cat(list(s)))
    assert not torch.equal(e0, e1)
    assert sorted(e0.tolist()) == list(range(100)) == sorted(e1.tolist())


def test_ranks_get_disjoint_equal_shards():
    shards = []
    for rank in range(3):
        s = IndexBatches(100, 8, shuffle=True, seed=0, rank=rank, world_size=3)
        s.set_epoch(5)
        shards.append(torch.cat(list(s)).tolist())
        assert len(s) == 5  # ceil(33 / 8): every rank takes the same number of steps
    assert all(len(sh) == 33 for sh in shards)
    assert len(set(shards[0]) | set(shards[1]) | set(shards[2])) == 99


def test_other_datasets_use_their_own_folders(tmp_path):
    root = make_mnist_root(tmp_path, "FashionMNIST", n_train=50, n_test=20)
    dm = MNISTDataModule(name="fashion_mnist", root=str(root), val_size=10, download=False)
    assert dm.split("test")[0].shape == (20, 28, 28)
    with pytest.raises(UserError, match="KMNIST not found in .*KMNIST/raw.*data.root"):
        MNISTDataModule(name="kmnist", root=str(root), val_size=10, download=False).setup()


def test_missing_files_fail_fast_with_one_line(tmp_path):
    dm = MNISTDataModule(root=str(tmp_path / "nowhere"), download=True)
    with pytest.raises(UserError) as err:
        dm.prepare_data()
    msg = str(err.value)
    assert "\n" not in msg and "nowhere" in msg and "DATA_DIR" in msg and "data.root" in msg
