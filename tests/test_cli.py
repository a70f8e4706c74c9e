"""The commands a user types: console scripts installed with the package,
and the one-line error boundary."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("name", ["vae-train", "vae-eval", "vae-sample", "vae-summarize"])
def test_console_scripts_are_installed_with_the_package(name):
    assert (BIN / name).is_file(), f"{name} missing from {BIN}: reinstall with make install"


def test_console_scripts_run_from_any_folder_with_the_same_one_line_errors(tmp_path):
    proc = subprocess.run(
        [BIN / "vae-train", "model.latent_dim=0"], cwd=tmp_path, capture_output=True, text=True
    )
    assert (
        proc.returncode == 2
        and proc.stderr == "error: model.latent_dim=0 must be >= 1, e.g. model.latent_dim=20\n"
    )
    assert list(tmp_path.iterdir()) == []  # refused before any folder was made
    proc = subprocess.run([BIN / "vae-summarize"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: give one sweep folder")
    proc = subprocess.run([BIN / "vae-eval", "--help"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0 and "eval" in proc.stdout  # Hydra's own flags still work


@pytest.mark.parametrize("name", ["vae-train", "vae-eval", "vae-sample", "vae-summarize"])
def test_help_shows_what_each_entry_point_takes(name, tmp_path):
    proc = subprocess.run([BIN / name, "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-2000:]
    takes = {
        "vae-train": ["model/net: conv, gated, mlp", "model:", "trainer:"],
        "vae-eval": ["ckpt_path: ???", "iw_samples:", "data:"],
        "vae-sample": ["ckpt_path: ???", "mode: prior", "data:"],
        "vae-summarize": ["SWEEP_DIR", "summary.csv"],
    }[name]
    assert all(t in proc.stdout for t in takes), proc.stdout[:3000]
    if name in ("vae-eval", "vae-sample"):  # not the training groups, which they would refuse
        assert "model/net" not in proc.stdout and "logger:" not in proc.stdout, proc.stdout[:3000]


def test_a_console_script_trains_from_another_folder(tiny_mnist, tmp_path):
    from tests.conftest import TINY

    proc = subprocess.run(
        [
            BIN / "vae-train",
            f"data.root={tiny_mnist}",
            *TINY,
            "trainer.max_epochs=1",
            "test=false",
            "callbacks.latent_embedding.num_points=20",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # outputs/ of the folder it was started in
    runs = list((tmp_path / "outputs" / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "metrics.json").is_file()


def test_the_readme_layout_names_every_module_of_the_package():
    readme = (REPO / "README.md").read_text()
    layout = readme[readme.index("## Layout") : readme.index("## Add your own")]
    modules = sorted(
        p.relative_to(REPO / "vae_lightning") for p in (REPO / "vae_lightning").rglob("*.py")
    )
    missing = [str(m) for m in modules if m.name != "__init__.py" and m.name not in layout]
    assert not missing, f"README's Layout does not name {missing}"
    folders = {m.parent for m in modules if m.parent != Path(".")}
    assert all(f"{f.name}/" in layout for f in folders), folders


def test_what_a_default_run_imports_is_a_declared_dependency():
    """pip install -e . alone must give a working vae-train: the default progress bar is Rich's."""
    import tomllib

    declared = " ".join(
        tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    )
    for package in (
        "torch",
        "torchvision",
        "lightning",
        "hydra-core",
        "omegaconf",
        "tensorboard",
        "torchmetrics",
        "rich",
    ):
        assert package in declared, package


def test_a_command_line_is_composed_by_hydra_and_each_swept_value_once_before_the_sweep_folder(
    monkeypatch,
):
    """The boundary composes no command line itself (Hydra does, and raises its typed errors); a
    sweep's values are each composed once, by Hydra's loader, before the sweep's folder exists."""
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from vae_lightning import boundary
    from vae_lightning.errors import USER_FULL_ERROR
    from vae_lightning.runs.build import BuildRun

    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    monkeypatch.setenv(USER_FULL_ERROR, "0")
    composed = []
    monkeypatch.setattr(boundary, "compose", lambda name, overrides: composed.append(overrides))
    for argv in (["model.latent_dim=3"], ["-m", "model.latent_dim=3,4", "seed=1"]):
        monkeypatch.setattr(sys, "argv", ["vae-train", *argv])
        boundary.run(lambda: None, "train")
    assert composed == []
    probes = boundary.sweep_probes(["-m", "model.latent_dim=3,4,5", "model/net=mlp,conv", "seed=1"])
    assert probes == [
        ["model.latent_dim=3", "model/net=mlp", "seed=1"],
        ["model.latent_dim=4", "model/net=mlp", "seed=1"],
        ["model.latent_dim=5", "model/net=mlp", "seed=1"],
        ["model.latent_dim=3", "model/net=conv", "seed=1"],
    ]  # each value once: 4 compositions for the 6 jobs
    loaded = []

    class Loader:
        def load_sweep_config(self, config, overrides):
            loaded.append(overrides)

    monkeypatch.setattr(GlobalHydra, "config_loader", lambda self: Loader())
    config = OmegaConf.create(
        {"hydra": {"overrides": {"task": ["model.latent_dim=3,4", "seed=1"]}}}
    )
    BuildRun().on_multirun_start(config=config, config_name="train")
    assert loaded == [["model.latent_dim=3", "seed=1"], ["model.latent_dim=4", "seed=1"]]
