"""The real entry point end to end: a short run's folder, TensorBoard content, learning,
reproducibility."""

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import REAL_DATA, TINY, run_train

SCALARS = ["train/loss", "train/recon", "train/kl", "val/loss", "val/recon", "val/kl"]


def train_tiny(root: Path, run_dir: Path, *extra: str):
    proc = run_train(f"data.root={root}", f"hydra.run.dir={run_dir}", *TINY, *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="module")
def tiny_run(tiny_mnist, tmp_path_factory):
    return train_tiny(tiny_mnist, tmp_path_factory.mktemp("runs") / "a", "trainer.max_epochs=3")


def events(run_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(
        str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0, "tensors": 0}
    )
    return acc.Reload()


def test_run_folder_holds_config_checkpoints_and_metrics(tiny_run):
    assert (tiny_run / ".hydra" / "config.yaml").is_file() and (
        tiny_run / ".hydra" / "overrides.yaml"
    ).is_file()
    ckpts = sorted(p.name for p in (tiny_run / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and any(n.startswith("best-epoch") for n in ckpts)
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    for key in SCALARS + ["test/loss", "best/val_loss"]:
        assert key in metrics["metrics"], key
    # ceil(500 / 32) steps per epoch
    assert metrics["epochs"] == 3 and metrics["global_step"] == 3 * 16
    assert (
        metrics["hparams"]["model.latent_dim"] == 20 and metrics["hparams"]["data.batch_size"] == 32
    )
    ckpt = torch.load(tiny_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert (
        ckpt["run_config"]["model"]["likelihood"]["_target_"].endswith(".Bernoulli")
        and ckpt["hyper_parameters"]["latent_dim"] == 20
    )


def test_last_ckpt_holds_the_last_epoch_when_it_did_not_improve(tiny_mnist, tmp_path):
    """mode=max on a falling val/loss: the best checkpoint stays at epoch 0, and last.ckpt still
    holds the end of the last epoch (Lightning 2.6 alone left it beside the best one)."""
    run = train_tiny(
        tiny_mnist, tmp_path / "run", "trainer.max_epochs=3", "callbacks.model_checkpoint.mode=max"
    )
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["best-epoch000.ckpt", "last.ckpt"]
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (2, 3 * 16)
    assert "weights_only" not in (run / "train.log").read_text()  # no Lightning notice per save


def test_a_new_run_from_a_checkpoint_records_what_it_trained_with(tiny_mnist, tiny_run, tmp_path):
    """ckpt_path=<another run's checkpoint> with a changed setting: the new run's records and
    checkpoints hold the setting it trained with, its best checkpoint is one of its own, and the
    best score is named after what the checkpoint callback follows."""
    run = tmp_path / "from_ckpt"
    proc = run_train(
        f"data.root={tiny_mnist}",
        f"hydra.run.dir={run}",
        *TINY,
        f"ckpt_path={tiny_run / 'checkpoints' / 'last.ckpt'}",
        "trainer.max_epochs=4",
        "model/likelihood=gaussian",
        "callbacks.model_checkpoint.monitor=train/loss",
        "test=false",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((run / "metrics.json").read_text())
    assert record["hparams"]["model.likelihood"] == "Gaussian" and record["epochs"] == 4
    assert (run / "checkpoints" / record["best_checkpoint"]).is_file()
    assert "best/val_loss" not in record["metrics"]
    assert record["metrics"]["best/train_loss"] == pytest.approx(record["metrics"]["train/loss"])
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["run_config"]["model"]["likelihood"]["_target_"].endswith(".Gaussian")


def test_a_run_shows_its_config_and_a_summary_and_logs_to_train_log(tiny_mnist, tmp_path):
    run = tmp_path / ("shown_" + "x" * 120 + "_bdf088")  # a long path, stdout not a terminal
    proc = run_train(
        f"data.root={tiny_mnist}", f"hydra.run.dir={run}", *TINY, "trainer.max_epochs=1"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    tree = (run / "config_tree.log").read_text()
    assert (
        tree.startswith("config")
        and "MLPNet" in tree
        and "latent_dim: 20" in tree
        and "\x1b[" not in tree
    )
    # printed at the start; whole lines in the file and on a stdout that is not a terminal
    assert "latent_dim: 20" in proc.stdout
    assert f"output_dir: {run}\n" in tree and f"output_dir: {run}\n" in proc.stdout
    summary = proc.stdout[proc.stdout.index("summary") :]
    for line in (
        f"run folder        {run}",
        "best checkpoint   best-epoch000.ckpt  (val/loss ",
        "test, nats/image  loss ",
        f"tensorboard --logdir {run}",
    ):
        assert line in summary, summary
    log = (run / "train.log").read_text()
    assert "`Trainer.fit` stopped" in log and "summary" in log  # Lightning's messages and ours
    assert "Total params" not in log  # trainer.enable_model_summary=false: no layer table
    # exact, not float32's
    assert json.loads((run / "metrics.json").read_text())["metrics"]["train/lr"] == 1e-3


def test_tensorboard_has_every_scalar_and_image_for_every_epoch(tiny_run):
    acc = events(tiny_run)
    tags = acc.Tags()
    for tag in SCALARS:
        assert len(acc.Scalars(tag)) == 3, tag
    # housekeeping stays out of the way: no "epoch" scalar, no learning-rate curve for a constant
    # rate (it is in the settings), latent statistics under z/, after the losses
    assert not [t for t in tags["scalars"] if t == "epoch" or "lr" in t], tags["scalars"]
    assert {t.split("/")[0] for t in tags["scalars"] + tags["histograms"]} == {
        "test",
        "train",
        "val",
        "z",
    }
    steps = [e.step for e in acc.Scalars("val/loss")]
    assert steps == [15, 31, 47]  # the last training step of each epoch (16 steps per epoch)
    for tag in ("train/samples", "val/reconstructions"):
        assert [e.step for e in acc.Images(tag)] == steps, tag  # one x-axis for everything
        name = tag.split("/")[1]
        pngs = sorted(p.name for p in (tiny_run / "images").glob(f"{name}_epoch*.png"))
        assert pngs == [f"{name}_epoch00{e}.png" for e in range(3)], pngs  # the grids as files
    sample = acc.Images("train/samples")[0]
    # a 4x4 grid of 28x28 with 2px padding
    assert (sample.width, sample.height) == (4 * 30 + 2, 4 * 30 + 2)
    recon = acc.Images("val/reconstructions")[0]
    assert (recon.width, recon.height) == (16 * 30 + 2, 2 * 30 + 2)  # inputs above reconstructions
    # each PNG file is its epoch's TensorBoard image (which truncates to 8 bits where the file
    # rounds), grey for grey images
    for tag, name in (("train/samples", "samples"), ("val/reconstructions", "reconstructions")):
        for epoch, event in enumerate(acc.Images(tag)):
            png = Image.open(tiny_run / "images" / f"{name}_epoch{epoch:03d}.png")
            shown = Image.open(io.BytesIO(event.encoded_image_string))
            assert png.mode == "L" and shown.mode == "RGB"
            assert png.size == shown.size == (event.width, event.height)
            grey = np.array(png).astype(int)
            red, green, blue = np.array(shown).astype(int).transpose(2, 0, 1)
            assert np.array_equal(red, green) and np.array_equal(red, blue)
            assert np.abs(grey - red).max() <= 1 and 0 < grey.mean() < 255  # and not blank


def test_hparams_dashboard_gets_the_runs_settings_without_paths(tiny_run):
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = events(tiny_run).PluginTagToContent("hparams")
    values = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]
    ).session_start_info.hparams
    assert {
        "model.latent_dim",
        "optimizer.lr",
        "model.likelihood",
        "model.net",
        "data.batch_size",
        "seed",
    } <= set(values)
    assert (
        values["model.net"].string_value == "MLPNet" and values["optimizer"].string_value == "Adam"
    )
    assert not {"data.root", "data.download", "optimizer.fused", "model.compile"} & set(values)
    # its row in the HParams table: what the command line set, then the run folder
    name = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]
    ).session_start_info.group_name
    assert name.endswith(f" ({tiny_run.name})") and "trainer.max_epochs=3" in name, name
    assert "_hparams_/session_end_info" in content  # the run finished
    # no experiment of its own: TensorBoard builds the columns from all the runs it shows,
    # differing ones first
    assert "_hparams_/experiment" not in content


def test_loss_goes_down(tiny_run):
    acc = events(tiny_run)
    train = [e.value for e in acc.Scalars("train/loss")]
    val = [e.value for e in acc.Scalars("val/loss")]
    assert train[-1] < train[0] * 0.9, train
    assert min(val[1:]) < val[0], val
    assert val[-1] < 0.6 * 784 * math.log(2), val  # an untrained decoder scores ~784 log 2 nats


def test_same_seed_same_metrics(tiny_mnist, tmp_path):
    a = train_tiny(tiny_mnist, tmp_path / "a", "seed=7")
    b = train_tiny(tiny_mnist, tmp_path / "b", "seed=7")
    assert (a / "metrics.json").read_bytes() == (b / "metrics.json").read_bytes()
    c = train_tiny(tiny_mnist, tmp_path / "c", "seed=8")
    assert (
        json.loads((a / "metrics.json").read_text())["metrics"]
        != json.loads((c / "metrics.json").read_text())["metrics"]
    )


def test_bce_on_minus_one_one_is_refused_from_the_command_line(tiny_mnist, tmp_path):
    proc = run_train(
        f"data.root={tiny_mnist}",
        f"hydra.run.dir={tmp_path / 'r'}",
        "data.mean=0.5",
        "data.std=0.5",
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert (
        lines[-1].startswith("error: model/likelihood=bernoulli")
        and "data.mean=0 data.std=1" in lines[-1]
    ), proc.stderr
    assert "Traceback" not in proc.stderr
    assert (
        not (tmp_path / "r" / "checkpoints").exists()
        and not (tmp_path / "r" / "tensorboard").exists()
    )


@pytest.mark.skipif(
    not (REAL_DATA / "FashionMNIST").is_dir(),
    reason="needs Fashion-MNIST in $DATA_DIR (or ../shared/data)",
)
def test_one_real_epoch_on_fashion_mnist(tmp_path):
    proc = run_train(
        f"data.root={REAL_DATA}",
        "data=fashion_mnist",
        f"hydra.run.dir={tmp_path}",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["global_step"] == 860  # ceil(55000 / 64)
    # nats per image after one epoch
    assert 230 < metrics["metrics"]["val/loss"] < 290, metrics["metrics"]


def test_a_run_without_callbacks_or_loggers_still_trains_and_reports(tiny_mnist, tmp_path):
    run = tmp_path / "bare"
    quick = [a for a in TINY if not a.startswith("callbacks.")]
    proc = run_train(
        f"data.root={tiny_mnist}", f"hydra.run.dir={run}", *quick, "~callbacks", "~logger"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert (
        metrics["epochs"] == 2
        and "val/loss" in metrics["metrics"]
        and "test/loss" in metrics["metrics"]
    )
    assert not (run / "tensorboard").exists()


@pytest.mark.parametrize(
    "preset,steps", [("debug=fdr", 1), ("debug=overfit", 20 * 3), ("debug=limit", 3 * 20)]
)
def test_debug_presets_run(tiny_mnist, tmp_path, preset, steps):
    run = tmp_path / preset.split("=")[1]
    # the preset sets the epochs and how often the train curves get a point
    quick = [a for a in TINY if not a.startswith(("trainer.max_epochs", "trainer.log_every"))]
    proc = run_train(
        f"data.root={tiny_mnist}", f"hydra.run.dir={run}", *quick, preset, "data.batch_size=8"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "log_every_n_steps" not in proc.stderr, proc.stderr[-3000:]  # no warning of Lightning's
    assert json.loads((run / "metrics.json").read_text())["global_step"] == steps


def test_early_stopping_and_the_profiler_report(tiny_mnist, tmp_path):
    run = tmp_path / "es"
    proc = run_train(
        f"data.root={tiny_mnist}",
        f"hydra.run.dir={run}",
        *TINY,
        "debug=profiler",
        "trainer.max_epochs=10",
        "callbacks/early_stopping=on",
        "callbacks.early_stopping.patience=1",
        "callbacks.early_stopping.min_delta=1000",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # no epoch improves val/loss by 1000 nats
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2
    report = next(run.glob("*profiler*.txt")).read_text()
    assert "Profiler Report" in report and "run_training_epoch" in report


def test_early_stopping_does_not_count_the_epochs_of_the_kl_warm_up(tiny_mnist, tmp_path):
    """As in the VampPrior paper's code: the count of epochs without improvement stays at 0 until
    the epoch whose end has the full KL weight (here the 4th), then patience 1 stops at once."""
    run = tmp_path / "es"
    proc = run_train(
        f"data.root={tiny_mnist}",
        f"hydra.run.dir={run}",
        *TINY,
        "trainer.max_epochs=10",
        "model.kl_warmup_epochs=4",
        "callbacks/early_stopping=on",
        "callbacks.early_stopping.patience=1",
        "callbacks.early_stopping.min_delta=1000",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 4  # without the warm-up: 2


def test_a_default_run_prints_no_dependency_noise(tiny_mnist, tmp_path):
    """With Python's warnings on, the default command prints no tip, deprecation or precision
    notice."""
    out = ""
    for more in (["trainer.max_epochs=1"], ["trainer.max_epochs=2", "resume=true"]):  # and resumed
        proc = run_train(
            f"data.root={tiny_mnist}",
            f"hydra.run.dir={tmp_path / 'r'}",
            "data.val_size=100",
            "trainer.limit_train_batches=3",
            "callbacks.latent_embedding.num_points=20",
            *more,
            env={"PYTHONWARNINGS": "default"},
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        out += proc.stdout + proc.stderr
    for noise in (
        "litlogger",
        "LeafSpec",
        "not supported by the model summary",
        "Warning",
        "deprecated",
        "exists and is not empty",
        "weights_only",
        "FLOPs",
        "Flops",
        "already configured with model summary",
    ):
        assert noise not in out, (noise, out[-3000:])
    # the layer table, in the console and the log, once per start
    assert out.count("Total params") == 2 and "| MLPNet" in out, out[-3000:]
    assert "1.1 M      Total params" in (tmp_path / "r" / "train.log").read_text()


def test_a_training_start_builds_each_component_once(tiny_mnist, tmp_path):
    """The command line's checks and the run use the same objects:
    one network, one data module, one callback."""
    counts = tmp_path / "built.txt"
    proc = run_train(
        f"data.root={tiny_mnist}",
        *TINY,
        "trainer.max_epochs=1",
        "test=false",
        f"hydra.run.dir={tmp_path / 'run'}",
        "data._target_=tests.counting.CountingMNIST",
        "model.net._target_=tests.counting.CountingNet",
        "+callbacks.count._target_=tests.counting.CountingCallback",
        env={"COUNT_FILE": str(counts)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    built = [line.split()[0] for line in counts.read_text().splitlines()]
    assert sorted(built) == ["callback", "data", "net"], built


@pytest.mark.parametrize("refresh_rate, expected", [(20, [20, 40, 45]), (1, list(range(1, 46)))])
def test_the_progress_bar_works_only_on_the_steps_it_redraws(monkeypatch, refresh_rate, expected):
    from lightning.pytorch.callbacks import RichProgressBar as LightningBar

    from vae_lightning.callbacks.progress import RichProgressBar

    done = []  # the steps after which Lightning's bar updated its task, metrics and display
    monkeypatch.setattr(LightningBar, "on_train_batch_end", lambda self, *a: done.append(a[-1] + 1))
    monkeypatch.setattr(RichProgressBar, "total_train_batches", property(lambda self: 45))
    bar = RichProgressBar(refresh_rate=refresh_rate)
    for batch_idx in range(45):
        bar.on_train_batch_end(None, None, None, None, batch_idx)
    assert done == expected  # every 20th and the epoch's last: what it shows is never stale
