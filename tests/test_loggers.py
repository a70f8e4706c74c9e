"""Loggers beside TensorBoard, each for real and offline: CSV, MLflow (local SQLite store), W&B
(offline), several at once; tags and the run name reach them, metrics.json and the sweep summary."""

import csv
import json
from pathlib import Path

import pytest

from tests.conftest import TINY, run_train
from tests.test_sweeps import read_csv

QUICK = [*TINY, "callbacks.latent_embedding.num_points=20", "test=false"]


def train(tiny_mnist: Path, tmp_path: Path, *args: str) -> Path:
    run = tmp_path / "run"
    proc = run_train(
        f"data.root={tiny_mnist}",
        f"hydra.run.dir={run}",
        f"paths.log_dir={tmp_path}",
        *QUICK,
        *args,
        env={"WANDB_SILENT": "true", "WANDB_MODE": "offline"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def ways_to_look(run: Path) -> list[str]:
    """The end-of-run summary's "look at it" lines (in train.log as on the console)."""
    lines = (run / "train.log").read_text().splitlines()
    return [line.split("look at it", 1)[1].strip() for line in lines if "  look at it  " in line]


def csv_rows(run: Path) -> list[dict]:
    with (run / "csv" / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def test_csv_logger_writes_every_epoch(tiny_mnist, tmp_path):
    run = train(tiny_mnist, tmp_path, "logger=csv")
    losses = [float(r["val/loss"]) for r in csv_rows(run) if r.get("val/loss")]
    assert len(losses) == 2 and losses[1] < losses[0]
    assert not (run / "tensorboard").exists()
    # the end-of-run summary names what the run wrote, not TensorBoard
    assert ways_to_look(run) == [str(run / "csv" / "metrics.csv")]


def test_mlflow_logger_records_the_run_with_its_name_tags_and_metrics(tiny_mnist, tmp_path):
    mlflow = pytest.importorskip("mlflow")
    run = train(tiny_mnist, tmp_path, "logger=mlflow", "tags=[baseline,tiny]", "model.latent_dim=3")
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    [found] = client.search_runs([client.get_experiment_by_name("vae_lightning").experiment_id])
    # the overrides that shape the result: no paths, no callbacks or display switches
    name = found.info.run_name
    assert name.endswith("model.latent_dim=3") and "data.batch_size=32" in name
    assert "data.root" not in name and "callbacks" not in name and "enable_progress_bar" not in name
    assert {"baseline", "tiny"} <= set(found.data.tags)
    assert len(client.get_metric_history(found.info.run_id, "val/loss")) == 2
    result = json.loads((run / "metrics.json").read_text())
    assert result["run_name"] == name and result["tags"] == ["baseline", "tiny"]


def test_wandb_logger_works_offline(tiny_mnist, tmp_path):
    pytest.importorskip("wandb")
    run = train(tiny_mnist, tmp_path, "logger=wandb", "tags=[offline]")
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("run-*.wandb")), list(
        (run / "wandb").iterdir()
    )


def test_many_loggers_at_once(tiny_mnist, tmp_path):
    pytest.importorskip("mlflow")
    run = train(tiny_mnist, tmp_path, "logger=many")
    assert (
        list((run / "tensorboard").glob("events.*"))
        and csv_rows(run)
        and (tmp_path / "mlflow.db").is_file()
    )
    assert ways_to_look(run) == [
        f"tensorboard --logdir {run}",
        str(run / "csv" / "metrics.csv"),
        f"mlflow ui --backend-store-uri sqlite:///{tmp_path}/mlflow.db",
    ]


def test_the_sweep_summary_shows_run_names_and_tags(tiny_mnist, tmp_path):
    proc = run_train(
        "-m",
        f"data.root={tiny_mnist}",
        f"hydra.sweep.dir={tmp_path / 's'}",
        *QUICK,
        "trainer.max_epochs=1",
        "model.latent_dim=2,4",
        "tags=[grid]",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = sorted(read_csv(tmp_path / "s" / "summary.csv"), key=lambda r: r["job"])
    assert [r["run_name"].rsplit(" ", 1)[-1] for r in rows] == [
        "model.latent_dim=2",
        "model.latent_dim=4",
    ]
    assert [r["tags"] for r in rows] == ["grid", "grid"]
