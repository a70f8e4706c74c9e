"""Bad input from the command line: one clear line, a non-zero exit, no traceback, nothing overwritten.

The cases that fail before training run one after another in a single Python process (as
``python -m vae_lightning.train <args>`` each, via runpy), which costs one interpreter start, not twenty.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY, make_mnist_root
from vae_lightning.data.download import reachable
from vae_lightning.data.mnist import DATASETS

DRIVER = """
import contextlib, io, json, os, runpy, sys
from hydra.core.global_hydra import GlobalHydra
results = []
for args, env in json.loads(sys.argv[1]):
    GlobalHydra.instance().clear()
    os.environ.pop("HYDRA_FULL_ERROR", None)
    os.environ.update(env)
    sys.argv, err, code = ["vae_lightning.train", *args], io.StringIO(), 0
    with contextlib.redirect_stderr(err):
        try:
            runpy.run_module("vae_lightning.train", run_name="__main__")
        except SystemExit as e:
            code = e.code
        except BaseException as e:  # raised out of main: what the user would see as a traceback
            import traceback
            traceback.print_exc(file=err)
            code = 1
    results.append({"code": code, "stderr": err.getvalue()})
print(json.dumps(results))
"""


def run_cases(cases: list[tuple[list[str], dict]]) -> list[dict]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(cases)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def damaged_root(root: Path, damage) -> Path:
    make_mnist_root(root, n_train=300, n_test=100)
    damage(root / "MNIST" / "raw" / "train-images-idx3-ubyte")
    return root


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:5000])


def wrong_magic(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[2] = 0x0D  # float32 instead of uint8
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def outcomes(tiny_mnist, tmp_path_factory):
    """Every case: (name, args, env, expected fragments of the last line) and what the user saw."""
    tmp = tmp_path_factory.mktemp("bad")
    a_file = tmp / "a_file"
    a_file.write_text("not a folder\n")
    earlier = tmp / "earlier_run"
    (earlier / "checkpoints").mkdir(parents=True)
    (earlier / "checkpoints" / "last.ckpt").write_bytes(b"precious weights")
    (earlier / "metrics.json").write_text('{"metrics": {"val/loss": 101.5}}\n')
    root = f"data.root={tiny_mnist}"
    missing = tmp / "no_such_folder"
    cases = {
        "latent_dim=0": ([root, "model.latent_dim=0"], "model.latent_dim=0 must be >= 1, e.g. model.latent_dim=20"),
        "latent_dim=-3": ([root, "model.latent_dim=-3"], "model.latent_dim=-3 must be >= 1, e.g. model.latent_dim=20"),
        "latent_dim=abc": ([root, "model.latent_dim=abc"], "model.latent_dim='abc' must be an integer >= 1"),
        "lr=0": ([root, "optimizer.lr=0"], "optimizer.lr=0 must be > 0, e.g. optimizer.lr=1e-3"),
        "lr=-1": ([root, "optimizer.lr=-1"], "optimizer.lr=-1 must be > 0, e.g. optimizer.lr=1e-3"),
        "batch_size=0": ([root, "data.batch_size=0"], "data.batch_size=0 must be >= 1, e.g. data.batch_size=64"),
        "loss=foo": ([root, "model.loss=foo"], "model.loss='foo' is not one of bce,"),
        "kl_weight=-1": ([root, "model.kl_weight=-1"], "model.kl_weight=-1 must be >= 0"),
        "max_epochs=-2": ([root, "trainer.max_epochs=-2"], "trainer.max_epochs=-2 must be >= -1 (-1 trains until stopped)"),
        "bce on [-1, 1]": ([root, "data.mean=0.5", "data.std=0.5"], "model.loss=bce needs pixels in [0, 1]"),
        "root missing, no download": ([f"data.root={missing}", "data.download=false"],
                                      f"MNIST not found in {missing}/MNIST/raw and data.download=false: set data.root="),
        "root is a file": ([f"data.root={a_file}"], f"data.root={a_file} is a file, not a folder"),
        "truncated IDX": ([f"data.root={damaged_root(tmp / 'trunc', truncate)}"],
                          f"{tmp}/trunc/MNIST/raw/train-images-idx3-ubyte is damaged (truncated: 5000 bytes, its header "
                          "says 235216): delete it (data.download=true fetches it again) or replace it with a good copy"),
        "wrong magic": ([f"data.root={damaged_root(tmp / 'magic', wrong_magic)}"],
                        f"{tmp}/magic/MNIST/raw/train-images-idx3-ubyte is damaged (magic number 0x00000d03, "
                        "expected 0x00000803)"),
        "output under a file": ([root, f"hydra.run.dir={a_file}/run"],
                                f"cannot write the output folder hydra.run.dir={a_file}/run (Not a directory): "
                                "set hydra.run.dir=... or paths.log_dir=... to a writable folder"),
        "log_dir under a file": ([root, f"paths.log_dir={a_file}/outputs"], "cannot write the output folder hydra.run.dir="),
        "earlier run's folder": ([root, f"hydra.run.dir={earlier}"],
                                 f"hydra.run.dir={earlier} already holds a run ({earlier}/checkpoints, {earlier}/metrics.json): "
                                 "choose a new hydra.run.dir=..., or add resume=true to continue that run"),
        "resume with nothing to resume": ([root, "resume=true"], "/checkpoints/last.ckpt does not exist: add hydra.run.dir="),
        "ckpt_path missing": ([root, f"ckpt_path={missing}.ckpt"], f"ckpt_path={missing}.ckpt is not a file"),
        "diverging lr": ([root, *TINY, "optimizer.lr=1e6"],
                         "training diverged at epoch 0, step 2: train/loss is nan; lower optimizer.lr (now 1e+06)"),
    }
    if not any(reachable(m, timeout=1) for m in DATASETS["mnist"].mirrors):  # offline, as here: must fail in seconds
        cases["root missing, offline"] = ([f"data.root={missing}"], f"MNIST not found in {missing}/MNIST/raw and no "
                                          "download server answers (ossci-datasets.s3.amazonaws.com, yann.lecun.com)")
    runs = {name: tmp / "runs" / str(i) for i, name in enumerate(cases)}
    args = [([*a, f"hydra.run.dir={runs[n]}"] if not any(x.startswith(("hydra.run.dir=", "paths.log_dir=")) for x in a)
             else a, {}) for n, (a, _) in cases.items()]
    args += [([root, "data=cifar"], {}), ([root, "model.latent_dim=0", f"hydra.run.dir={tmp / 'full'}"],
                                          {"HYDRA_FULL_ERROR": "1"})]
    started = time.perf_counter()
    results = run_cases(args)
    seconds = time.perf_counter() - started
    named = {n: (expected, r) for (n, (_, expected)), r in zip(cases.items(), results)}
    return {"named": named, "cifar": results[-2], "full": results[-1], "earlier": earlier, "runs": runs, "seconds": seconds}


CASES = ["latent_dim=0", "latent_dim=-3", "latent_dim=abc", "lr=0", "lr=-1", "batch_size=0", "loss=foo", "kl_weight=-1",
         "max_epochs=-2", "bce on [-1, 1]", "root missing, no download", "root missing, offline", "root is a file",
         "truncated IDX", "wrong magic", "output under a file", "log_dir under a file", "earlier run's folder",
         "resume with nothing to resume", "ckpt_path missing", "diverging lr"]


@pytest.mark.parametrize("name", CASES)
def test_one_line_nonzero_exit_no_traceback(outcomes, name):
    if name not in outcomes["named"]:
        pytest.skip("a download server is reachable from here")
    expected, result = outcomes["named"][name]
    lines = result["stderr"].strip().splitlines()
    assert result["code"] == 2, result["stderr"][-3000:]
    assert "Traceback" not in result["stderr"], result["stderr"][-3000:]
    assert lines[-1].startswith("error: ") and expected in lines[-1], lines[-1]  # names the setting/file and the fix


def test_cases_fail_before_training(outcomes):
    runs = outcomes["runs"]
    for name in CASES[:-1]:  # all but the divergence: no checkpoint, no TensorBoard, no metrics
        if name in runs:
            assert not any((runs[name] / d).exists() for d in ("checkpoints", "tensorboard", "metrics.json")), name
    assert outcomes["seconds"] < 120, "each bad input is refused in seconds"


def test_earlier_run_is_untouched(outcomes):
    earlier = outcomes["earlier"]
    assert (earlier / "checkpoints" / "last.ckpt").read_bytes() == b"precious weights"
    assert (earlier / "metrics.json").read_text() == '{"metrics": {"val/loss": 101.5}}\n'
    assert not (earlier / ".hydra").exists() and sorted(p.name for p in earlier.iterdir()) == ["checkpoints", "metrics.json"]


def test_unknown_group_option_lists_the_choices(outcomes):
    result = outcomes["cifar"]
    assert result["code"] == 1 and "Traceback" not in result["stderr"]
    assert "Could not find 'data/cifar'" in result["stderr"]
    assert "Available options in 'data':\n\tarrays\n\tcifar10\n\tfashion_mnist\n\timage_folder\n\tkmnist\n\tmnist" in result["stderr"]


def test_HYDRA_FULL_ERROR_shows_the_traceback(outcomes):
    result = outcomes["full"]
    assert result["code"] != 0 and "Traceback" in result["stderr"]
    assert "Error: model.latent_dim=0 must be >= 1" in result["stderr"]  # SettingError, a UserError


def test_runs_started_together_never_share_a_folder(tiny_mnist, tmp_path):
    quick = [f"data.root={tiny_mnist}", *TINY, "trainer.max_epochs=1", "trainer.limit_train_batches=2",
             "trainer.limit_val_batches=1", "test=false", "callbacks.latent_embedding.num_points=50",
             f"paths.log_dir={tmp_path}"]
    cmd = [sys.executable, "-m", "vae_lightning.train"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    procs = [subprocess.Popen([*cmd, *quick], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    procs.append(subprocess.Popen([*cmd, "-m", *quick, "seed=1,2"], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    singles = sorted((tmp_path / "runs").iterdir())
    jobs = sorted(p for sweep in (tmp_path / "multiruns").iterdir() for p in sweep.iterdir() if p.is_dir())
    assert len(singles) == 2 and [j.name for j in jobs] == ["0", "1"]
    for run in singles + jobs:
        assert json.loads((run / "metrics.json").read_text())["global_step"] == 2, run
        assert (run / "checkpoints" / "last.ckpt").is_file() and len(list((run / "tensorboard").glob("events.*"))) == 1
    seeds = {json.loads((j / "metrics.json").read_text())["hparams"]["seed"] for j in jobs}
    assert seeds == {1, 2}
