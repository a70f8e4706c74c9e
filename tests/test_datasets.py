"""The dataset components beyond MNIST: CIFAR-10 batches, .npz/.npy arrays and image folders, read
from small generated files; their splits, normalization per channel, and one-line errors for bad
input."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from vae_lightning.data.arrays import ArrayDataModule
from vae_lightning.data.cifar import CIFAR10DataModule
from vae_lightning.data.image_folder import ImageFolderDataModule
from vae_lightning.data.synthetic import PALETTE, make_cifar_root, make_image_folder, make_npz
from vae_lightning.errors import SettingError, UserError


def one_line(error: pytest.ExceptionInfo) -> str:
    msg = str(error.value)
    assert "\n" not in msg and len(msg) < 400
    return msg


def rows(images: torch.Tensor) -> set[bytes]:
    return {bytes(r) for r in images.flatten(1).numpy()}


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    return make_cifar_root(tmp_path_factory.mktemp("cifar"), n_train=500, n_test=100)


# CIFAR-10


def test_cifar_reads_the_python_batches(cifar_root):
    dm = CIFAR10DataModule(root=str(cifar_root), val_size=100, batch_size=32, download=False)
    assert dm.image_shape == (3, 32, 32) and dm.data_range == ([0.0] * 3, [1.0] * 3)
    assert dm.class_names[:2] == ["airplane", "automobile"] and len(dm.class_names) == 10
    (train_x, train_y), (val_x, _), (test_x, test_y) = (
        dm.split("train"),
        dm.split("val"),
        dm.split("test"),
    )
    assert (
        train_x.shape == (400, 3, 32, 32)
        and train_x.dtype == torch.uint8
        and train_y.dtype == torch.int64
    )
    assert val_x.shape == (100, 3, 32, 32) and test_x.shape == (100, 3, 32, 32)
    assert 0 <= train_y.min() and train_y.max() <= 9 and len(train_y.unique()) == 10
    with open(cifar_root / "cifar-10-batches-py" / "test_batch", "rb") as f:
        batch = pickle.load(f, encoding="latin1")
    # rows are C, H, W
    assert torch.equal(test_x, torch.from_numpy(batch["data"]).view(-1, 3, 32, 32))
    assert test_y.tolist() == batch["labels"]
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (32,)
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.9


def test_mean_and_std_per_channel(cifar_root):
    mean, std = [0.1, 0.2, 0.3], [0.5, 0.25, 2.0]
    dm = CIFAR10DataModule(
        root=str(cifar_root), val_size=100, batch_size=100, mean=mean, std=std, download=False
    )
    lo, hi = dm.data_range
    assert lo == pytest.approx([-0.2, -0.8, -0.15]) and hi == pytest.approx([1.8, 3.2, 0.35])
    x, _ = next(iter(dm.loader("test")))
    raw = dm.split("test")[0].float() / 255
    for c in range(3):
        assert torch.allclose(x[:, c], (raw[:, c] - mean[c]) / std[c], atol=1e-6)
        assert lo[c] - 1e-6 <= x[:, c].min() and x[:, c].max() <= hi[c] + 1e-6


def test_missing_cifar_without_download_is_one_line(tmp_path):
    dm = CIFAR10DataModule(root=str(tmp_path / "nowhere"), download=False)
    with pytest.raises(UserError) as err:
        dm.prepare_data()
    msg = one_line(err)
    assert "CIFAR10 not found" in msg and "data.download=false" in msg
    assert "data.root=" in msg and "cifar-10-batches-py/" in msg


def test_partial_or_damaged_cifar_names_the_file(tmp_path):
    folder = make_cifar_root(tmp_path, n_train=50, n_test=10) / "cifar-10-batches-py"
    (folder / "data_batch_3").unlink()
    with pytest.raises(UserError, match=r"data_batch_3 is missing") as err:
        CIFAR10DataModule(root=str(tmp_path), val_size=10, download=True).setup()
    one_line(err)
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match=r"data_batch_3 is damaged") as err:
        CIFAR10DataModule(root=str(tmp_path), val_size=10, download=False).setup()
    one_line(err)


# .npz / .npy arrays


@pytest.mark.parametrize("channels_last", [True, False])
def test_npz_with_test_arrays_and_labels(tmp_path, channels_last):
    path = make_npz(tmp_path / "d.npz", n_train=300, n_test=100, channels_last=channels_last)
    source = np.load(path)
    dm = ArrayDataModule(
        path=str(path), val_size=50, batch_size=25, class_names=[str(k) for k in range(10)]
    )
    assert dm.image_shape == (3, 16, 16) and dm.class_names[9] == "9"
    train_x, val_x = dm.split("train")[0], dm.split("val")[0]
    test_x, test_y = dm.split("test")
    assert (
        train_x.shape == (250, 3, 16, 16)
        and val_x.shape == (50, 3, 16, 16)
        and test_x.dtype == torch.uint8
    )
    nchw = {
        k: torch.from_numpy(
            np.ascontiguousarray(source[k].transpose(0, 3, 1, 2) if channels_last else source[k])
        )
        for k in ("x_train", "x_test")
    }
    assert torch.equal(test_x, nchw["x_test"]) and test_y.tolist() == source["y_test"].tolist()
    assert rows(train_x) | rows(val_x) == rows(nchw["x_train"])
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (25, 3, 16, 16) and x.max() <= 1.0 and 0 <= y.min() and y.max() <= 9


def test_grey_floats_without_labels_or_test_set(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (120, 8, 10)).astype(np.float32)  # (N, H, W)
    np.savez(tmp_path / "grey.npz", x_train=images)
    dm = ArrayDataModule(path=str(tmp_path / "grey.npz"), val_size=20, test_size=30)
    assert dm.image_shape == (1, 8, 10) and dm.class_names is None
    (train_x, train_y), (test_x, test_y) = dm.split("train"), dm.split("test")
    assert len(train_x) == 70 and len(dm.split("val")[0]) == 20 and len(test_x) == 30
    assert (train_y == -1).all() and (test_y == -1).all()
    as_uint8 = torch.from_numpy(np.round(images * 255).astype(np.uint8)).unsqueeze(1)
    assert rows(train_x) | rows(dm.split("val")[0]) | rows(test_x) == rows(as_uint8)


def test_held_out_test_set_is_fixed_while_seed_moves_the_val_split(tmp_path):
    path = make_npz(tmp_path / "d.npz", n_train=200, n_test=0, channels_last=False)
    a, b = (ArrayDataModule(path=str(path), val_size=40, test_size=50, seed=s) for s in (0, 1))
    assert torch.equal(a.split("test")[0], b.split("test")[0]) and len(a.split("test")[0]) == 50
    assert not torch.equal(a.split("val")[0], b.split("val")[0])
    assert not rows(a.split("test")[0]) & (rows(a.split("train")[0]) | rows(a.split("val")[0]))
    assert a.split("test")[1].min() >= 0  # y_train's labels come along


def test_npy_image_shape_before_setup(tmp_path):
    images = np.zeros((60, 12, 14, 4), np.uint8)  # channels-last RGBA
    np.save(tmp_path / "x.npy", images)
    dm = ArrayDataModule(path=str(tmp_path / "x.npy"), val_size=10, test_size=10)
    assert dm.image_shape == (4, 12, 14) and dm.data_range == ([0.0] * 4, [1.0] * 4)
    assert dm.split("train")[0].shape == (40, 4, 12, 14) and (dm.split("train")[1] == -1).all()


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"images": np.zeros((5, 8, 8), np.uint8)}, r"no array x_train \(it holds: images\)"),
        (
            {"x_train": np.zeros((5, 8, 8, 2), np.uint8)},
            r"x_train has shape \[5, 8, 8, 2\]: store images as",
        ),
        ({"x_train": np.zeros((5, 8, 8), np.int64)}, r"x_train has dtype int64: store uint8"),
        (
            {"x_train": np.full((5, 8, 8), 2.0)},
            r"x_train holds floats in \[2, 2\]: scale them to \[0, 1\]",
        ),
        (
            {"x_train": np.zeros((5, 8, 8), np.uint8), "y_train": np.zeros(4, np.int64)},
            r"y_train holds 4 labels for 5 images",
        ),
        (
            {"x_train": np.zeros((5, 8, 8), np.uint8), "y_train": np.zeros(5, np.float32)},
            r"y_train is float32 .*integer labels",
        ),
    ],
)
def test_bad_arrays_are_one_line_errors(tmp_path, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(UserError, match=match) as err:
        ArrayDataModule(path=str(tmp_path / "bad.npz"), val_size=1, test_size=1).prepare_data()
    assert str(tmp_path / "bad.npz") in one_line(err)


def test_boolean_masks_are_black_and_white_images(tmp_path):
    masks = np.random.default_rng(0).random((20, 8, 8)) > 0.5
    np.savez(tmp_path / "masks.npz", x_train=masks)
    dm = ArrayDataModule(path=str(tmp_path / "masks.npz"), val_size=2, test_size=2)
    dm.prepare_data()
    images = dm.split("train")[0]
    assert images.dtype == torch.uint8 and set(images.unique().tolist()) == {0, 255}


def test_bad_array_paths(tmp_path):
    with pytest.raises(SettingError) as err:
        ArrayDataModule(path=str(tmp_path / "missing.npz"))
    assert err.value.key == "path" and "does not exist: point data.path at a .npz" in one_line(err)
    assert str(err.value.under("data")).startswith("data.path=")
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(SettingError, match=r"is not a \.npz or \.npy file") as err:
        ArrayDataModule(path=str(tmp_path / "x.csv"))
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(UserError, match=r"junk.npz cannot be read") as err:
        ArrayDataModule(path=str(tmp_path / "junk.npz"))
    one_line(err)


# image folders


def test_image_folder_with_class_subfolders(tmp_path):
    make_image_folder(tmp_path, n_per_class=12, classes=["cat", "dog", "emu"], size=(12, 16))
    dm = ImageFolderDataModule(root=str(tmp_path), val_size=6, batch_size=10)
    assert dm.image_shape == (3, 12, 16) and dm.class_names == ["cat", "dog", "emu"]
    (train_x, train_y), (test_x, test_y) = dm.split("train"), dm.split("test")
    # test/: 6 per class
    assert train_x.shape == (30, 3, 12, 16) and test_x.shape == (18, 3, 12, 16)
    assert sorted(test_y.tolist()) == [0] * 6 + [1] * 6 + [2] * 6
    # each class's top rows are its palette colour (lossless PNG)
    band = (PALETTE[:3] * 255).round()
    for x, y in ((train_x, train_y), (test_x, test_y)):
        assert torch.equal(x[:, :, 0, 0], torch.from_numpy(band[y.numpy()]).to(torch.uint8))


def test_flat_image_folder_is_unlabeled_and_can_be_resized_to_grey(tmp_path):
    make_image_folder(tmp_path, n_per_class=40, classes=None, size=20, test=False)
    Image.new("RGB", (20, 20), (255, 0, 0)).save(tmp_path / "train" / "red.bmp")
    Image.new("RGB", (20, 20), (0, 0, 255)).save(tmp_path / "train" / "blue.JPG")
    dm = ImageFolderDataModule(
        root=str(tmp_path), channels=1, image_size=[10, 8], val_size=5, test_size=7
    )
    assert dm.image_shape == (1, 10, 8) and dm.class_names is None
    train_x, train_y = dm.split("train")
    assert (
        train_x.shape == (30, 1, 10, 8) and (train_y == -1).all() and len(dm.split("test")[0]) == 7
    )
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (30, 1, 10, 8) and 0.0 <= x.min() and x.max() <= 1.0


def test_odd_image_size_names_the_file(tmp_path):
    make_image_folder(tmp_path, n_per_class=3, classes=["a", "b"], size=16, test=False)
    Image.new("RGB", (17, 16)).save(tmp_path / "train" / "b" / "odd.png")
    with pytest.raises(UserError) as err:
        ImageFolderDataModule(root=str(tmp_path), val_size=1, test_size=1).prepare_data()
    msg = one_line(err)
    assert "odd.png is 16x17 pixels" in msg and "data.image_size=[16,16]" in msg
    resized = ImageFolderDataModule(root=str(tmp_path), image_size=16, val_size=1, test_size=1)
    assert resized.split("train")[0].shape[1:] == (3, 16, 16)


def test_unreadable_image_and_missing_folders(tmp_path):
    make_image_folder(tmp_path, n_per_class=3, classes=["a"], size=8, test=False)
    (tmp_path / "train" / "a" / "zz_broken.png").write_bytes(b"not an image")
    with pytest.raises(UserError, match=r"zz_broken.png cannot be decoded as an image") as err:
        ImageFolderDataModule(root=str(tmp_path), val_size=1, test_size=1).prepare_data()
    one_line(err)
    with pytest.raises(SettingError, match=r"has no train/ folder") as err:
        ImageFolderDataModule(root=str(tmp_path / "train"))
    assert err.value.key == "root"
    with pytest.raises(SettingError, match=r"root=.* does not exist"):
        ImageFolderDataModule(root=str(tmp_path / "nowhere"))


# settings


@pytest.mark.parametrize(
    "build, key",
    [
        (lambda tmp: CIFAR10DataModule(root=str(tmp), std=0), "std"),
        (lambda tmp: CIFAR10DataModule(root=str(tmp), mean=[0.5, 0.5]), "mean"),
        (lambda tmp: ArrayDataModule(path=str(tmp / "nope.npy")), "path"),
        (lambda tmp: ArrayDataModule(path=str(make_npz(tmp / "d.npz")), test_size=0), "test_size"),
        (
            lambda tmp: ArrayDataModule(path=str(make_npz(tmp / "d.npz")), class_names="cat"),
            "class_names",
        ),
        (lambda tmp: ImageFolderDataModule(root=str(tmp), channels=2), "channels"),
        (lambda tmp: ImageFolderDataModule(root=str(tmp), image_size=[8, 0]), "image_size"),
    ],
)
def test_bad_settings_are_setting_errors(tmp_path, build, key):
    with pytest.raises(SettingError) as err:
        build(tmp_path)
    assert err.value.key == key and one_line(err).startswith(f"{key}=")
