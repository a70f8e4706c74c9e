"""Multiruns end to end: the sweep summary, failed jobs, rebuilding the summary, HParams across
runs, the joblib launcher, the Optuna sweeper and the SLURM launcher config."""

import contextlib
import csv
import json
import math
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from tests.conftest import REPO, TINY, run_train
from tests.launcher import command_env
from vae_lightning import summarize

ONE_EPOCH = [
    *TINY,
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=4",
    "trainer.num_sanity_val_steps=0",
    "callbacks.latent_embedding.num_points=50",
]


def sweep(root: Path, sweep_dir: Path, *args: str, code: int = 0) -> Path:
    proc = run_train("-m", f"data.root={root}", f"hydra.sweep.dir={sweep_dir}", *ONE_EPOCH, *args)
    assert proc.returncode == code, proc.stderr[-3000:]
    if code:  # a job failed: the sweep says so on its last line, and still writes the summary
        assert (
            proc.stderr.strip().splitlines()[-1].startswith("error: ")
            and "jobs did not complete" in proc.stderr
        )
    return sweep_dir


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def grid(tiny_mnist, tmp_path_factory):
    return sweep(
        tiny_mnist,
        tmp_path_factory.mktemp("sweeps") / "grid",
        "model.latent_dim=2,8",
        "optimizer.lr=1e-3,3e-3",
    )


def test_grid_gives_one_row_per_run_sorted_by_val_loss(grid):
    rows = read_csv(grid / "summary.csv")
    assert len(rows) == 4
    assert {(int(r["model.latent_dim"]), float(r["optimizer.lr"])) for r in rows} == {
        (2, 1e-3),
        (2, 3e-3),
        (8, 1e-3),
        (8, 3e-3),
    }
    losses = [float(r["val/loss"]) for r in rows]
    assert losses == sorted(losses) and all(math.isfinite(v) and v > 0 for v in losses)
    for r in rows:
        run = Path(r["run_dir"])
        overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
        assert (
            f"model.latent_dim={r['model.latent_dim']}" in overrides
            and f"optimizer.lr={r['optimizer.lr']}" in overrides
        )
        assert r["status"] == "completed" and r["epochs"] == "1" and r["error"] == ""
        assert 0 < float(r["wall_time_s"]) < 120 and float(r["test/loss"]) > 0
    md = (grid / "summary.md").read_text().splitlines()
    assert sum(line.startswith("| ") for line in md) == 1 + 4  # header + a row per run
    assert "data.root=" in md[2]  # overrides shared by all runs are listed once


def test_each_job_log_holds_that_job_alone(grid):
    """Lightning's lines (which name the job's checkpoints) reach the job's own train.log, and no
    later job's lines do."""
    jobs = sorted(p for p in grid.iterdir() if (p / "train.log").is_file())
    assert len(jobs) == 4
    for job in jobs:
        log = (job / "train.log").read_text()
        assert f"Restoring states from the checkpoint path at {job}/checkpoints/" in log, log
        assert not [other for other in jobs if other != job and f"{other}/" in log], log


def test_summarize_rebuilds_the_same_table(grid, tmp_path):
    before = {n: (grid / n).read_bytes() for n in ("summary.csv", "summary.md")}
    for name in before:
        (grid / name).unlink()
    assert summarize.main([str(grid)]) == 0
    assert {n: (grid / n).read_bytes() for n in before} == before
    assert summarize.main([str(tmp_path)]) == 2  # a folder without job folders


def test_every_run_of_the_sweep_has_its_hparams_in_tensorboard_under_a_name_saying_what_varies(
    grid,
):
    for r in read_csv(grid / "summary.csv"):
        label = f"model.latent_dim={r['model.latent_dim']},optimizer.lr={r['optimizer.lr']}"
        # TensorBoard's run name: "<job>/tensorboard/<label>"
        folder = Path(r["run_dir"]) / "tensorboard" / label
        assert [p.name for p in (Path(r["run_dir"]) / "tensorboard").iterdir()] == [label]
        acc = EventAccumulator(str(folder), size_guidance={"tensors": 0, "scalars": 0}).Reload()
        assert acc.Scalars("val/loss")
        content = acc.PluginTagToContent("hparams")
        # one experiment for the whole sweep, in the sweep folder
        assert "_hparams_/experiment" not in content
        session = plugin_data_pb2.HParamsPluginData.FromString(
            content["_hparams_/session_start_info"]
        )
        values = session.session_start_info.hparams
        assert values["model.latent_dim"].number_value == int(r["model.latent_dim"])
        assert values["optimizer.lr"].number_value == pytest.approx(float(r["optimizer.lr"]))
        assert (
            "data.root" not in values
            and "data.download" not in values
            and "optimizer.fused" not in values
        )
        ended = plugin_data_pb2.HParamsPluginData.FromString(
            content["_hparams_/session_end_info"]
        ).session_end_info
        assert ended.status == 1  # STATUS_SUCCESS


@contextlib.contextmanager
def tensorboard_server(logdir: Path):
    """``tensorboard --logdir`` as a user starts it; yields a function that POSTs (or, with no body,
    GETs) a path of its HTTP API and returns the JSON answer."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", f"--logdir={logdir}", f"--port={port}"]
        + ["--host=127.0.0.1", "--reload_interval=1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def ask(path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/{path}", data, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())

    try:
        deadline = time.monotonic() + 90
        while True:  # up, and done loading the folder (every run's HParams session read)
            assert proc.poll() is None and time.monotonic() < deadline, "tensorboard did not start"
            try:
                if ask("data/plugin/hparams/session_groups", SESSION_GROUPS)["totalSize"] >= 1:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        yield ask
    finally:
        proc.kill()
        proc.wait()


SESSION_GROUPS = {
    "experimentName": "",
    "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
    "colParams": [],
    "startIndex": 0,
    "sliceSize": 100,
}


def test_the_hparams_table_shows_what_the_sweep_varies_with_rows_told_apart(grid):
    """As TensorBoard serves it to the browser for the sweep folder: the columns are the two swept
    settings (the dashboard shows the first five and hides the rest, so settings the jobs share
    are left out), and each row's name starts with its job number and values."""
    with tensorboard_server(grid) as ask:
        experiment = ask("data/plugin/hparams/experiment", {"experimentName": ""})
        groups = ask("data/plugin/hparams/session_groups", SESSION_GROUPS)["sessionGroups"]
    columns = [(h["name"], h.get("differs", False)) for h in experiment["hparamInfos"]]
    assert columns == [("model.latent_dim", True), ("optimizer.lr", True)], columns
    assert [m["name"]["tag"] for m in experiment["metricInfos"]] == ["val/loss", "test/loss"]
    rows = {r["run_dir"]: r for r in read_csv(grid / "summary.csv")}
    assert len(groups) == len(rows) == 4
    for group in groups:
        job = group["name"].split(":")[0]
        r = rows[str(grid / job)]
        label = f"model.latent_dim={r['model.latent_dim']},optimizer.lr={r['optimizer.lr']}"
        assert group["name"] == f"{job}: {label} ({grid.name})", group["name"]
        assert group["hparams"]["model.latent_dim"] == float(r["model.latent_dim"])
        (value,) = [m["value"] for m in group["metricValues"] if m["name"]["tag"] == "val/loss"]
        assert value == pytest.approx(float(r["val/loss"]), rel=1e-5)
    # the table's first column shows about 15 characters: enough to tell the rows apart
    assert len({g["name"][:15] for g in groups}) == 4


def test_tensorboard_opens_on_the_losses_and_the_sample_grid(grid):
    """TensorBoard's time series sorts the tags by name, groups them by their first part, and opens
    the first two groups: those are the losses, with the sample grid; housekeeping sorts last."""
    with tensorboard_server(grid / "0") as ask:
        tags = ask("data/plugin/timeseries/tags")
    names = {
        t
        for kind in ("scalars", "histograms")
        for ts in tags[kind]["runTagInfo"].values()
        for t in ts
    }
    names |= set(tags["images"]["tagRunSampledInfo"])
    groups = list(dict.fromkeys(t.split("/")[0] for t in sorted(names)))
    assert groups == ["test", "train", "val", "z"], groups
    opened = {t for t in names if t.split("/")[0] in groups[:2]}
    assert {"train/loss", "train/samples", "test/loss"} <= opened, opened
    assert not {"epoch", "lr-Adam", "kl_per_dim"} & names, names


def test_failed_jobs_become_failed_rows_and_the_others_finish(tiny_mnist, tmp_path):
    """In parallel through joblib: a config error, a crash inside Lightning, and one good run."""
    out = sweep(
        tiny_mnist,
        tmp_path / "sweep",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "model.latent_dim=0,4",
        "trainer.precision=32-true,bogus",
        code=2,
    )
    rows = read_csv(out / "summary.csv")
    assert len(rows) == 4
    ok = [r for r in rows if r["status"] == "completed"]
    assert [(r["model.latent_dim"], r["trainer.precision"]) for r in ok] == [("4", "32-true")]
    assert math.isfinite(float(ok[0]["val/loss"])) and rows[0] == ok[0]  # failures sort last
    failed = {
        (r["model.latent_dim"], r["trainer.precision"]): r for r in rows if r["status"] == "failed"
    }
    assert set(failed) == {("0", "32-true"), ("0", "bogus"), ("4", "bogus")}
    assert failed[("0", "32-true")]["error"].startswith("model.latent_dim=0 must be >= 1")
    assert "bogus" in failed[("4", "bogus")]["error"] and failed[("4", "bogus")]["val/loss"] == ""
    assert (Path(ok[0]["run_dir"]) / "metrics.json").is_file()


def test_optuna_search_runs_trials_and_minimizes_val_loss(tiny_mnist, tmp_path):
    out = sweep(
        tiny_mnist,
        tmp_path / "optuna",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.sampler.n_startup_trials=3",
    )
    rows = read_csv(out / "summary.csv")
    assert len(rows) == 3 and all(r["status"] == "completed" for r in rows)
    for r in rows:
        assert 1e-4 <= float(r["optimizer.lr"]) <= 3e-3 and r["model.latent_dim"] in {
            "2",
            "5",
            "10",
            "20",
            "32",
        }
        assert 0.25 <= float(r["model.kl_weight"]) <= 2.0
    best = yaml.safe_load((out / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(float(rows[0]["val/loss"]), rel=1e-5)
    assert float(best["best_params"]["model.kl_weight"]) == pytest.approx(
        float(rows[0]["model.kl_weight"]), rel=1e-5
    )


def test_slurm_launcher_config_composes():
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (
        launcher.partition == "gpu" and launcher.tasks_per_node == 1 and launcher.gpus_per_node == 1
    )
    assert "vae_lightning.summarize.SweepSummary" in [
        c._target_ for c in cfg.hydra.callbacks.values()
    ]


def test_slurm_native_ddp_configs_compose_one_task_per_gpu(monkeypatch):
    """trainer=slurm + hydra/launcher=slurm_ddp: a SLURM job per run with one task per GPU
    (Lightning's SLURM DDP)."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "hydra/launcher=slurm_ddp",
                "trainer=slurm",
                "trainer.devices=4",
                "trainer.num_nodes=2",
            ],
            return_hydra_config=True,
        )
        launcher, trainer = cfg.hydra.launcher, cfg.trainer
        assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (4, 4, 2)
        assert (trainer.strategy, trainer.accelerator, trainer.devices, trainer.num_nodes) == (
            "ddp",
            "gpu",
            4,
            2,
        )
        # inside an sbatch allocation the task layout comes from SLURM itself
        monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "8")
        monkeypatch.setenv("SLURM_NNODES", "3")
        cfg = compose("train", overrides=["trainer=slurm"])
        assert (cfg.trainer.devices, cfg.trainer.num_nodes) == (8, 3)


def test_a_sweep_whose_jobs_all_fail_exits_2_and_damaged_jobs_are_marked(tiny_mnist, tmp_path):
    # every job fails once its data is read
    proc = run_train(
        "-m",
        f"data.root={tiny_mnist}",
        f"hydra.sweep.dir={tmp_path / 's'}",
        *ONE_EPOCH,
        "model.latent_dim=1,2",
        "data.val_size=1000",
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith("error: 2 of 2 jobs did not complete (job 0, 1): see ")
    )
    rows = read_csv(tmp_path / "s" / "summary.csv")
    assert [r["status"] for r in rows] == ["failed", "failed"] and rows[0]["error"].startswith(
        "data.val_size=1000"
    )


def test_summarize_marks_jobs_with_unreadable_files_as_damaged(grid, tmp_path):
    import shutil

    copy = tmp_path / "grid"
    shutil.copytree(grid, copy)
    (copy / "1" / "metrics.json").write_text('{"metrics": {"val/loss": 1')  # cut short
    (copy / "2" / "run_info.json").write_bytes(b"\x00\xff")
    assert summarize.main([str(copy)]) == 0
    rows = {r["job"]: r for r in read_csv(copy / "summary.csv")}
    assert rows["1"]["status"] == "damaged" and "metrics.json cannot be read" in rows["1"]["error"]
    assert rows["2"]["status"] == "damaged" and "run_info.json cannot be read" in rows["2"]["error"]
    assert rows["0"]["status"] == rows["3"]["status"] == "completed"


def test_submitit_local_launcher_runs_the_jobs(tiny_mnist, tmp_path):
    """The same code path as SLURM (submitit), each job in its own process on this machine."""
    out = sweep(
        tiny_mnist,
        tmp_path / "submitit",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=5",
        "model.latent_dim=2,4",
    )
    rows = read_csv(out / "summary.csv")
    assert sorted(r["model.latent_dim"] for r in rows) == ["2", "4"] and all(
        r["status"] == "completed" for r in rows
    )
    assert list((out / ".submitit").glob("*/*_result.pkl"))  # submitit's own record of each job


def test_an_optuna_study_is_shared_by_two_workers_through_sqlite(tiny_mnist, tmp_path):
    import subprocess
    import sys

    import optuna

    from tests.conftest import REPO

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    # once, before the workers
    optuna.create_study(study_name="shared", storage=storage, direction="minimize")
    env = command_env()
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vae_lightning.train",
                f"data.root={tiny_mnist}",
                *ONE_EPOCH,
                f"hydra.sweep.dir={tmp_path / f'worker{i}'}",
                "hparams_search=optuna",
                "hydra.sweeper.n_trials=2",
                "hydra.sweeper.sampler.n_startup_trials=2",
                f"hydra.sweeper.storage={storage}",
                "hydra.sweeper.study_name=shared",
                f"hydra.sweeper.sampler.seed={i}",
            ],
            cwd=REPO,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for w in workers:
        _, err = w.communicate(timeout=600)
        assert w.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name="shared", storage=storage)
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    # one study, both workers' trials
    assert len(trials) == 4 and study.best_value == min(t.value for t in trials)
