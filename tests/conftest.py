"""Shared fixtures: tiny but valid MNIST IDX files, and a way to run the real entry points."""

import os
from pathlib import Path

import pytest

from tests.launcher import command_env, run_python_module
from vae_lightning.data.synthetic import make_mnist_root

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    """Under pytest-xdist (``make test`` runs one worker per core): each worker on cores of its
    own, so that it and every process it starts (each sizes its torch threads from its CPU
    affinity, callbacks/threads.py) never fight the other workers for a core."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ...
    n = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if not (worker and n and hasattr(os, "sched_setaffinity")):
        return
    import torch

    cores, i = sorted(os.sched_getaffinity(0)), int(worker.removeprefix("gw"))
    mine = set(cores[i::n]) if n <= len(cores) else {cores[i % len(cores)]}
    os.sched_setaffinity(0, mine)
    torch.set_num_threads(len(mine))


# real data for the few tests that train on it: $DATA_DIR, else the development checkouts' copy
REAL_DATA = Path(os.environ.get("DATA_DIR") or REPO.parent / "shared" / "data")


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory) -> Path:
    """Root folder holding a 600/200-image MNIST in torchvision's raw layout."""
    return make_mnist_root(tmp_path_factory.mktemp("data"))


# Overrides that make a run take seconds on the tiny data.
TINY = [
    "data.val_size=100",
    "data.batch_size=32",
    "trainer.max_epochs=2",
    "callbacks.sample_grid.num_samples=16",
    "callbacks.sample_grid.nrow=4",
    "trainer.log_every_n_steps=5",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def run_module(
    module: str, *args: str, cwd: Path = REPO, env: dict | None = None, timeout: int = 600
):
    """Run ``python -m module args`` as a user would; returns the CompletedProcess
    (tests/launcher.py: in a fork of a process that has imported the libraries already)."""
    return run_python_module(module, args, cwd, command_env(env), timeout)


def run_train(*args: str, **kw):
    return run_module("vae_lightning.train", *args, **kw)


@pytest.fixture(scope="session")
def latent2_run(tiny_mnist, tmp_path_factory) -> Path:
    """ONE short real training run (2-D latent) shared by the eval, sample and knob tests:
    its run folder."""
    run_dir = tmp_path_factory.mktemp("latent2") / "run"
    proc = run_train(
        f"data.root={tiny_mnist}",
        f"hydra.run.dir={run_dir}",
        *TINY,
        "experiment=latent2",
        "model.net.hidden_dims=[128,64]",
        "optimizer.lr=3e-3",
        "trainer.max_epochs=3",
        "callbacks.latent_embedding.num_points=100",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir
