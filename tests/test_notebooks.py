"""The notebooks run top to bottom (tiny settings injected after their parameters cell) and render
their figures."""

import sys
from pathlib import Path

import matplotlib.image
import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REAL_DATA, REPO

NOTEBOOKS = REPO / "notebooks"
# Seconds, not minutes: a few batches per epoch, small test sets and no final test pass.
TINY_TRAIN = [
    "trainer.limit_train_batches=30",
    "trainer.limit_val_batches=5",
    "test=false",
    "model.net.hidden_dims=[128,64]",
    "callbacks.latent_embedding.num_points=100",
    "callbacks.sample_grid.num_samples=16",
    "callbacks.sample_grid.nrow=4",
    "trainer.log_every_n_steps=5",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def test_committed_notebooks_have_no_outputs():
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert {p.name for p in paths} >= {"explore_vae.ipynb", "compare_sweep.ipynb"}
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        assert "parameters" in nb.cells[1].metadata.get("tags", []), (
            f"{path.name}: cell 2 must be the parameters cell"
        )
        for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{path.name} code cell {i} has outputs: clear them"
            )


def execute(name: str, parameters: dict) -> nbformat.NotebookNode:
    """Run notebooks/<name> in the test's Python with ``parameters`` set after its parameters cell
    (as papermill does)."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    assignments = "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
    # the kernel must be this interpreter
    # (jupyter maps kernel "python3" to sys.executable unless a user spec shadows it)
    injected = f"import sys\nassert sys.prefix == {sys.prefix!r}, sys.executable\n{assignments}"
    nb.cells.insert(
        2, nbformat.v4.new_code_cell(injected, metadata={"tags": ["injected-parameters"]})
    )
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    return nb


def outputs_text(nb) -> str:
    return "\n".join(
        o.get("text", "") + o.get("data", {}).get("text/markdown", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )


def assert_rendered(path: Path) -> None:
    """A PNG with content: several KB, and pixels that are not one flat colour."""
    assert path.is_file(), f"{path} was not written"
    assert path.stat().st_size > 5_000, f"{path} is only {path.stat().st_size} bytes"
    assert matplotlib.image.imread(path)[..., :3].std() > 0.05, f"{path} is (nearly) blank"


@pytest.mark.slow
def test_explore_vae_notebook_renders_every_figure(tmp_path):
    """Trains a tiny model and a 2-D one (on ../shared/data Fashion-MNIST when present, else
    generated data): a model defined in a file under tests/ (a beta-TCVAE), which the notebook opens
    as itself from its checkpoints."""
    out = tmp_path / "figures"
    model = ["model._target_=tests.custom_models.BetaTCVAE", "+model.tc_weight=2.0"]
    nb = execute(
        "explore_vae.ipynb",
        {
            "OUT_DIR": str(out),
            "WORK_DIR": str(tmp_path / "work"),
            "LATENT_DIM": 8,
            "TRAIN_ARGS": [*TINY_TRAIN, *model, "trainer.max_epochs=2"],
            "N_TEST": 500,
        },
    )
    for name in (
        "prior_samples",
        "reconstructions",
        "interpolations",
        "manifold",
        "latent_pca",
        "kl_per_dim",
    ):
        assert_rendered(out / f"{name}.png")
    text = outputs_text(nb)
    # generated data has 200 test images
    n_test = 500 if (REAL_DATA / "FashionMNIST").is_dir() else 200
    assert "BetaTCVAE on" in text and "latent_dim=8" in text, text[-2000:]
    assert f"negative ELBO on {n_test} test images" in text, text[-2000:]


@pytest.mark.slow
def test_compare_sweep_notebook_plots_every_run(tmp_path):
    """A 2-run sweep on generated data (DATA_ROOT without Fashion-MNIST),
    then its table and curves."""
    out = tmp_path / "figures"
    nb = execute(
        "compare_sweep.ipynb",
        {
            "OUT_DIR": str(out),
            "WORK_DIR": str(tmp_path / "work"),
            "DATA_ROOT": str(tmp_path / "no_data"),
            "SWEEP_ARGS": ["model.latent_dim=2,4", "trainer.max_epochs=3", *TINY_TRAIN],
        },
    )
    assert_rendered(out / "val_loss_curves.png")
    text = outputs_text(nb)
    assert "2 runs, 0 failed" in text, text[-2000:]
    assert "| job | model.latent_dim | status |" in text, text[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["explore_vae.ipynb", "compare_sweep.ipynb"])
def test_the_notebooks_run_with_their_shipped_parameters(tmp_path, name):
    """Every shipped default (TRAIN_ARGS, SWEEP_ARGS, LATENT_DIM...) as it is; FAST=True only adds a
    few batches per epoch on top, so a default that no longer composes fails here."""
    out = tmp_path / "figures"
    nb = execute(name, {"OUT_DIR": str(out), "WORK_DIR": str(tmp_path / "work"), "FAST": True})
    shipped = nbformat.read(NOTEBOOKS / name, as_version=4).cells[1].source
    assert "FAST = False" in shipped  # the notebook as a user opens it trains in full
    figures = sorted(p.name for p in out.glob("*.png"))
    assert figures, outputs_text(nb)[-2000:]
    for path in out.glob("*.png"):
        assert_rendered(path)
