"""Faults during training: divergence, kill -9 and resume, Ctrl-C, checkpoint writes cut short."""

import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import REPO, TINY, run_train
from tests.launcher import command_env
from vae_lightning.callbacks.guards import (
    Diverged,
    DivergenceGuard,
    InterruptCheckpoint,
    resume_hint,
)
from vae_lightning.resolvers import auto_precision
from vae_lightning.runs import checkpoints
from vae_lightning.runs.checkpoints import AtomicCheckpointIO

STEPS_PER_EPOCH = 16  # ceil(500 / 32) on the tiny data
QUICK = [*TINY, "test=false", "callbacks.latent_embedding.num_points=50"]


class PauseAt(Callback):
    """Test instrumentation: at (epoch, batch) touch ``marker`` and wait,
    so a test can kill the run there."""

    def __init__(self, epoch: int, batch: int, marker: str) -> None:
        self.epoch, self.batch, self.marker = epoch, batch, Path(marker)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            self.marker.touch()
            time.sleep(120)


class RecordBatches(Callback):
    """Test instrumentation: append (epoch, batch_idx, pixel sum) of every trained batch to
    ``path``."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        with self.path.open("a") as f:
            f.write(f"{trainer.current_epoch} {batch_idx} {batch[0].sum().item():.3f}\n")


class PoisonAt(Callback):
    """Test instrumentation: at (epoch, batch) a weight becomes NaN, as after an overflow."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            with torch.no_grad():
                next(pl_module.parameters()).view(-1)[0] = float("nan")


class PauseInSetup(Callback):
    """Test instrumentation: touch ``marker`` and wait as the fit is set up, before the run writes
    any output."""

    def __init__(self, marker: str) -> None:
        self.marker = Path(marker)

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            self.marker.touch()
            time.sleep(120)


class BuggyCallback(Callback):
    """Test instrumentation: a researcher's callback whose constructor has a bug."""

    def __init__(self, every: int = 2) -> None:
        self.schedule = [0] * every + None


class FailOnTest(Callback):
    """Test instrumentation: the test pass fails, as when a run is killed (or a disk fails) after
    its fit."""

    def on_test_start(self, trainer, pl_module) -> None:
        raise RuntimeError("the test pass failed")


def callback_overrides(name: str, cls: type, **kw) -> list[str]:
    return [f"+callbacks.{name}._target_=tests.test_faults.{cls.__name__}"] + [
        f"+callbacks.{name}.{k}={v}" for k, v in kw.items()
    ]


def start_train(*args: str, session: bool = False) -> subprocess.Popen:
    """Start the entry point in the background (as a user's terminal would) and return it; with
    ``session``, in a process group of its own, which a terminal's Ctrl-C reaches as a whole."""
    return subprocess.Popen(
        [sys.executable, "-m", "vae_lightning.train", *args],
        cwd=REPO,
        env=command_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as in a terminal: a runner started in the background (CI, `make test &`) has SIGINT
        # ignored, which its children would inherit and Python would then never raise
        # KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        start_new_session=session,
    )


def wait_for(marker: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the run never reached the pause point"
        time.sleep(0.1)


def scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0}).Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def tensorboard_steps(run: Path) -> dict[str, list[int]]:
    """{tag: the steps it was logged at} of a run's scalars, images and histograms."""
    acc = EventAccumulator(
        str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "histograms": 0}
    ).Reload()
    kinds = {"scalars": acc.Scalars, "images": acc.Images, "histograms": acc.Histograms}
    return {
        f"{kind}:{tag}": [e.step for e in read(tag)]
        for kind, read in kinds.items()
        for tag in acc.Tags()[kind]
    }


def test_kill_9_mid_epoch_then_resume_matches_an_uninterrupted_run(tiny_mnist, tmp_path):
    common = [f"data.root={tiny_mnist}", *QUICK, "trainer.max_epochs=3", "seed=3"]
    run, marker = tmp_path / "killed", tmp_path / "paused"
    proc = start_train(
        *common,
        f"hydra.run.dir={run}",
        *callback_overrides("pause", PauseAt, epoch=1, batch=8, marker=marker),
    )
    straight = tmp_path / "straight"  # meanwhile, the same run uninterrupted
    assert run_train(*common, f"hydra.run.dir={straight}").returncode == 0
    wait_for(marker, proc)
    proc.send_signal(signal.SIGKILL)  # mid-epoch 1: 8 of its 16 steps done
    proc.wait()
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["epoch"] == 0 and saved["global_step"] == STEPS_PER_EPOCH  # lost: half an epoch
    assert not (run / "metrics.json").exists()

    proc = run_train(*common, f"hydra.run.dir={run}", "resume=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = (json.loads((r / "metrics.json").read_text()) for r in (straight, run))
    assert (
        (b["epochs"], b["global_step"])
        == (a["epochs"], a["global_step"])
        == (3, 3 * STEPS_PER_EPOCH)
    )
    for key in ("val/loss", "val/recon", "val/kl", "train/loss"):
        # only the sampling noise differs (the reparameterization draws); a collapsed KL (~0.02 nats
        # here) is all noise, so it compares in nats, not relative to its own size
        assert b["metrics"][key] == pytest.approx(a["metrics"][key], rel=0.01, abs=0.05), key

    # every curve has exactly one point per epoch, at the same steps as the uninterrupted run's
    curves_a, curves_b = scalars(straight), scalars(run)
    for tag in ("train/loss", "val/loss", "val/kl", "z/active_units"):
        assert [s for s, _ in curves_b[tag]] == [s for s, _ in curves_a[tag]], tag
        assert len(curves_b[tag]) == 3, tag


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tiny_mnist, tmp_path):
    run, marker, seen = tmp_path / "run", tmp_path / "paused", tmp_path / "seen.txt"
    record = callback_overrides("record", RecordBatches, path=seen)
    proc = start_train(
        f"data.root={tiny_mnist}",
        *QUICK,
        f"hydra.run.dir={run}",
        *record,
        *callback_overrides("pause", PauseAt, epoch=1, batch=5, marker=marker),
    )
    wait_for(marker, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "Traceback" not in err, err[-3000:]
    step = STEPS_PER_EPOCH + 5
    assert (
        f"interrupted at epoch 1, step {step}: saved {run / 'checkpoints' / 'last.ckpt'}" in err
    ), err[-2000:]
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == step and saved["epoch"] == 1
    info = json.loads((run / "run_info.json").read_text())
    assert info["status"] == "interrupted" and info["error"].startswith("interrupted (Ctrl-C)")

    proc = run_train(
        f"data.root={tiny_mnist}", *QUICK, f"hydra.run.dir={run}", "resume=true", *record
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = json.loads((run / "metrics.json").read_text())
    # the epoch was finished, not redone
    assert (done["epochs"], done["global_step"]) == (2, 2 * STEPS_PER_EPOCH)

    # the resumed epoch trained on exactly the batches the interrupted one had not reached,
    # in the same order
    reference = tmp_path / "reference.txt"
    proc = run_train(
        f"data.root={tiny_mnist}",
        *QUICK,
        f"hydra.run.dir={tmp_path / 'ref'}",
        *callback_overrides("record", RecordBatches, path=reference),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert seen.read_text().splitlines() == reference.read_text().splitlines()
    # one x-axis across the resume in mid-epoch: Lightning's scalars, the images and the histogram
    # at the steps of the uninterrupted run, the last step of each epoch
    resumed, straight = tensorboard_steps(run), tensorboard_steps(tmp_path / "ref")
    assert resumed == straight and len(resumed) >= 8, (resumed, straight)
    assert {tuple(steps) for steps in resumed.values()} == {(15, 31)}, resumed


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_mnist, tmp_path):
    run = tmp_path / "run"
    proc = run_train(
        f"data.root={tiny_mnist}",
        *QUICK,
        f"hydra.run.dir={run}",
        *callback_overrides("poison", PoisonAt, epoch=1, batch=3),
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = run / "checkpoints" / "last.ckpt"
    bf16 = auto_precision("cpu") == "bf16-mixed"  # the CPU default where the CPU has native bf16
    precision_hint = " or use trainer.precision=32-true (now bf16-mixed)" if bf16 else ""
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: training diverged at epoch 1, step {STEPS_PER_EPOCH + 4}: train/loss is nan; "
        f"lower optimizer.lr (now 0.001){precision_hint}; the last good checkpoint is {last}"
    )
    saved = torch.load(last, weights_only=True)
    assert saved["global_step"] == STEPS_PER_EPOCH
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values())


def test_guard_refuses_to_checkpoint_nan_weights_between_loss_checks():
    # the accelerator setting: the loss is rarely looked at
    guard = DivergenceGuard(check_every_n_steps=50)
    module = torch.nn.Linear(3, 2)
    trainer = SimpleNamespace(
        current_epoch=4,
        global_step=210,
        precision="16-mixed",
        checkpoint_callback=None,
        optimizers=[torch.optim.SGD(module.parameters(), lr=0.5)],
    )
    guard.on_save_checkpoint(trainer, module, {})  # finite: saved
    with torch.no_grad():
        module.weight[0, 0] = float("inf")
    with pytest.raises(
        Diverged,
        match=r"epoch 4, step 210: the weights hold NaN/inf; lower optimizer.lr \(now 0.5\) "
        r"or use trainer.precision=32-true \(now 16-mixed\)",
    ):
        guard.on_save_checkpoint(trainer, module, {})


def test_a_save_cut_short_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    io, path = AtomicCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(1000)}, path)

    def dies_halfway(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # the process is stopped mid-write

    monkeypatch.setattr(checkpoints.torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(1000)}, path)
    assert torch.load(path, weights_only=True)["global_step"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def wait_for_sigterm(trainer) -> None:
    """Until this process has been sent SIGTERM: as Lightning sees it, or, with several ranks, as
    InterruptCheckpoint does (in place of Lightning)."""
    stop = next(c for c in trainer.callbacks if isinstance(c, InterruptCheckpoint))
    deadline = time.monotonic() + 120
    while not (trainer.received_sigterm or stop.sigterm) and time.monotonic() < deadline:
        time.sleep(0.05)


class PauseUntilSigterm(Callback):
    """Test instrumentation: at (epoch, batch) touch ``marker`` and wait until
    Lightning has seen a SIGTERM."""

    def __init__(self, epoch: int, batch: int, marker: str) -> None:
        self.epoch, self.batch, self.marker = epoch, batch, Path(marker)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            self.marker.touch()
            wait_for_sigterm(trainer)


class PauseEachUntilSigterm(Callback):
    """Test instrumentation for processes that train side by side (sweep jobs, DDP ranks): at
    (epoch, batch) each touches ``<folder>/<its pid>`` and waits until it has been sent SIGTERM."""

    def __init__(self, epoch: int, batch: int, folder: str) -> None:
        self.epoch, self.batch, self.folder = epoch, batch, Path(folder)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            (self.folder / str(os.getpid())).touch()
            wait_for_sigterm(trainer)


class SlowSaveInJob(Callback):
    """Test instrumentation: sweep job ``job``'s checkpoint saves take ``seconds`` longer."""

    def __init__(self, job: int, seconds: float) -> None:
        self.job, self.seconds = job, seconds

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.get().job.num == self.job:
            time.sleep(self.seconds)


class DiskFullAt(Callback):
    """Test instrumentation: the checkpoint save at ``step`` fails as on a full disk."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if trainer.global_step == self.step:
            path = Path(trainer.checkpoint_callback.dirpath) / "last.ckpt"
            raise OSError(28, "No space left on device", str(path))


def all_checkpoints_load(run: Path) -> list[str]:
    names = []
    for path in sorted((run / "checkpoints").glob("*.ckpt")):
        ckpt = torch.load(path, weights_only=True)
        assert "state_dict" in ckpt and all(
            torch.isfinite(v).all() for v in ckpt["state_dict"].values()
        ), path
        names.append(path.name)
    return names


def test_sigterm_saves_a_checkpoint_and_the_run_resumes_mid_epoch(tiny_mnist, tmp_path):
    run, marker, seen = tmp_path / "run", tmp_path / "paused", tmp_path / "seen.txt"
    record = callback_overrides("record", RecordBatches, path=seen)
    proc = start_train(
        f"data.root={tiny_mnist}",
        *QUICK,
        f"hydra.run.dir={run}",
        *record,
        *callback_overrides("pause", PauseUntilSigterm, epoch=1, batch=5, marker=marker),
    )
    wait_for(marker, proc)
    proc.send_signal(signal.SIGTERM)  # what SLURM, Kubernetes and `timeout` send
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "Traceback" not in err, err[-3000:]
    step = STEPS_PER_EPOCH + 6  # Lightning finishes the batch in flight, then stops
    assert err.strip().splitlines()[-1] == (
        f"stopped by SIGTERM at epoch 1, step {step}: saved {run / 'checkpoints' / 'last.ckpt'}; "
        f"to continue, run the same command with hydra.run.dir={run} resume=true"
    )
    assert json.loads((run / "run_info.json").read_text())["status"] == "interrupted"
    assert err.strip().splitlines()[-1] in (run / "train.log").read_text()  # the hint, kept
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == step
    assert all_checkpoints_load(run) == ["best-epoch000.ckpt", "last.ckpt"]
    proc = run_train(
        f"data.root={tiny_mnist}", *QUICK, f"hydra.run.dir={run}", "resume=true", *record
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 2 * STEPS_PER_EPOCH
    batches = [line.split()[:2] for line in seen.read_text().splitlines()]
    # each batch once
    assert batches == [[str(e), str(b)] for e in (0, 1) for b in range(STEPS_PER_EPOCH)]


def test_sigterm_to_a_ddp_run_stops_its_ranks_together_and_the_run_resumes(tiny_mnist, tmp_path):
    """trainer=ddp spawns its ranks: SIGTERM to the command (as SLURM or `timeout` send it) reaches
    them all, they stop at the same batch and save once, and resume=true finishes the run."""
    run, paused, seen = tmp_path / "run", tmp_path / "paused", tmp_path / "seen.txt"
    paused.mkdir()
    record = callback_overrides("record", RecordBatches, path=seen)
    ddp = [
        f"data.root={tiny_mnist}",
        *QUICK,
        f"hydra.run.dir={run}",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.num_sanity_val_steps=0",
        *record,
    ]
    proc = start_train(
        *ddp, *callback_overrides("pause", PauseEachUntilSigterm, epoch=0, batch=3, folder=paused)
    )
    deadline = time.monotonic() + 240
    while len(list(paused.iterdir())) < 2:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the ranks never reached the pause point"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "Traceback" not in err, err[-3000:]
    # each rank trained batch 3, then they stopped together: one line, from rank zero
    assert err.count("stopped by SIGTERM") == 1, err[-3000:]
    assert err.strip().splitlines()[-1] == (
        f"stopped by SIGTERM at epoch 0, step 4: saved {run / 'checkpoints' / 'last.ckpt'}; "
        f"to continue, run the same command with hydra.run.dir={run} resume=true"
    )
    assert json.loads((run / "run_info.json").read_text())["status"] == "interrupted"
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    proc = run_train(*ddp, "resume=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # 250 images per rank, 16 per rank per step
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 2 * STEPS_PER_EPOCH
    batches = sorted(tuple(map(int, line.split()[:2])) for line in seen.read_text().splitlines())
    # each batch once on each rank
    assert batches == sorted([(e, b) for e in (0, 1) for b in range(STEPS_PER_EPOCH)] * 2)


def test_the_resume_hint_of_a_make_train_run_is_a_make_command(monkeypatch):
    run = Path("/runs/my run")
    monkeypatch.setattr(sys, "argv", ["train", "model.latent_dim=8", "hydra.run.dir=/old"])
    monkeypatch.delenv("VAE_LIGHTNING_MAKE", raising=False)
    assert resume_hint(run) == "run the same command with 'hydra.run.dir=/runs/my run' resume=true"
    monkeypatch.setenv("VAE_LIGHTNING_MAKE", "train")  # what `make train` sets
    assert resume_hint(run) == (
        "run: make train ARGS='model.latent_dim=8 hydra.run.dir=/runs/my run resume=true'"
    )


def test_a_damaged_last_checkpoint_falls_back_to_the_newest_intact_one(tiny_mnist, tmp_path):
    run = tmp_path / "run"
    assert run_train(f"data.root={tiny_mnist}", *QUICK, f"hydra.run.dir={run}").returncode == 0
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:10_000])  # truncated, as by a disk that filled up
    (run / "checkpoints" / ".last.ckpt.99999.tmp").write_bytes(b"half a checkpoint of a killed run")
    proc = run_train(
        f"data.root={tiny_mnist}",
        *QUICK,
        f"hydra.run.dir={run}",
        "resume=true",
        "trainer.max_epochs=3",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "warning: last.ckpt is not a readable checkpoint (" in proc.stdout
    assert "resuming from" in proc.stdout and "best-epoch" in proc.stdout
    # rewritten, intact
    assert torch.load(last, weights_only=True)["global_step"] == 3 * STEPS_PER_EPOCH
    assert not list((run / "checkpoints").glob(".*.tmp"))  # the killed run's half file is gone
    assert all_checkpoints_load(run)

    for path in (run / "checkpoints").glob("*.ckpt"):
        path.write_bytes(b"garbage")
    proc = run_train(
        f"data.root={tiny_mnist}",
        *QUICK,
        f"hydra.run.dir={run}",
        "resume=true",
        "trainer.max_epochs=4",
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: resume=true but no checkpoint in {run / 'checkpoints'} can be read (")
    )


def test_a_second_process_on_the_same_run_folder_is_refused(tiny_mnist, tmp_path):
    run, marker = tmp_path / "run", tmp_path / "paused"
    first = start_train(
        f"data.root={tiny_mnist}",
        *QUICK,
        f"hydra.run.dir={run}",
        *callback_overrides("pause", PauseAt, epoch=1, batch=2, marker=marker),
    )
    try:
        wait_for(marker, first)
        second = run_train(f"data.root={tiny_mnist}", *QUICK, f"hydra.run.dir={run}", "resume=true")
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert second.stderr.strip().splitlines() == [
            line
            for line in second.stderr.strip().splitlines()
            if line.startswith(f"error: hydra.run.dir={run} is in use by process {first.pid} on ")
        ]
    finally:
        first.kill()
        first.wait()
    assert all_checkpoints_load(run)
    # the lock was stale
    proc = run_train(f"data.root={tiny_mnist}", *QUICK, f"hydra.run.dir={run}", "resume=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (run / ".lock").exists()


def test_a_moved_run_resumes_in_place_with_more_epochs(tiny_mnist, tmp_path):
    old, new = tmp_path / "old", tmp_path / "elsewhere" / "new"
    assert run_train(f"data.root={tiny_mnist}", *QUICK, f"hydra.run.dir={old}").returncode == 0
    new.parent.mkdir()
    old.rename(new)
    # the test pass loads the best checkpoint from where it is now
    proc = run_train(
        f"data.root={tiny_mnist}",
        *QUICK,
        f"hydra.run.dir={new}",
        "resume=true",
        "trainer.max_epochs=3",
        "test=true",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = all_checkpoints_load(new)
    # no last-v1.ckpt beside a stale last
    assert "last.ckpt" in names and not any("-v" in n for n in names), names
    last = torch.load(new / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 3 * STEPS_PER_EPOCH
    state = next(v for k, v in last["callbacks"].items() if k.startswith("RunCheckpoint"))
    assert (
        Path(state["best_model_path"]).parent == new / "checkpoints"
        and Path(state["best_model_path"]).is_file()
    )
    result = json.loads((new / "metrics.json").read_text())
    assert result["epochs"] == 3 and "test/loss" in result["metrics"]
    assert json.loads((new / "run_info.json").read_text())["status"] == "completed"


def test_a_full_disk_is_one_line_and_keeps_the_last_good_checkpoint(tiny_mnist, tmp_path):
    run = tmp_path / "run"
    proc = run_train(
        f"data.root={tiny_mnist}",
        *QUICK,
        f"hydra.run.dir={run}",
        *callback_overrides("full", DiskFullAt, step=2 * STEPS_PER_EPOCH),
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: cannot use {run / 'checkpoints' / 'last.ckpt'} (No space left on device): "
        "free some space, or point hydra.run.dir (or paths.log_dir) at another disk; "
        "checkpoints already written are intact"
    )
    assert (
        torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
        == STEPS_PER_EPOCH
    )
    assert "OSError" in (run / "train.log").read_text()  # the traceback is kept in the run's log
    assert all_checkpoints_load(run) == ["best-epoch000.ckpt", "last.ckpt"]
    proc = run_train(f"data.root={tiny_mnist}", *QUICK, f"hydra.run.dir={run}", "resume=true")
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_kill_9_during_checkpoint_writes_never_leaves_a_damaged_checkpoint(tiny_mnist, tmp_path):
    """A checkpoint after every step, and kill -9 at arbitrary moments: every checkpoint left loads,
    and the run resumes to the end."""
    run = tmp_path / "run"
    every_step = [
        f"data.root={tiny_mnist}",
        *QUICK,
        f"hydra.run.dir={run}",
        "model.net.hidden_dims=[64]",
        "trainer.max_epochs=6",
        "+callbacks.model_checkpoint.every_n_train_steps=1",
        "callbacks.model_checkpoint.every_n_epochs=null",
    ]
    last, kills = run / "checkpoints" / "last.ckpt", 0
    for i in range(4):
        started = time.time()
        proc = start_train(*every_step, *(["resume=true"] if i else []))
        # training, and writing checkpoints; a run that an earlier kill caught after its last
        # step has nothing left to train: it ends on its own, and so does one that finishes
        # before the kill comes
        while proc.poll() is None and (not last.exists() or last.stat().st_mtime < started):
            time.sleep(0.02)
        if proc.poll() is None:
            time.sleep(random.Random(i).uniform(0.0, 0.3))
            proc.send_signal(signal.SIGKILL)
        code = proc.wait()
        assert code in (0, -signal.SIGKILL), proc.communicate()[1][-3000:]
        kills += code == -signal.SIGKILL
        all_checkpoints_load(run)
        if code == 0:
            break
    assert kills >= 1  # the first run takes seconds: the kill always comes mid-run
    proc = run_train(*every_step, "resume=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "last.ckpt" in all_checkpoints_load(run) and not list(
        (run / "checkpoints").glob(".*.tmp")
    )
    result = json.loads((run / "metrics.json").read_text())
    # A kill at some moments (seen once in several runs: 9 extra steps) makes the resumed epoch
    # repeat batches that were trained before the kill; never more than one epoch's worth (see the
    # closing note of issue 11).
    assert (
        result["epochs"] == 6 and 6 * STEPS_PER_EPOCH <= result["global_step"] < 7 * STEPS_PER_EPOCH
    )


def test_resuming_a_complete_run_keeps_its_record_and_a_lost_test_pass_is_run_alone(
    tiny_mnist, tmp_path
):
    run, args = (
        tmp_path / "run",
        [f"data.root={tiny_mnist}", *TINY, "callbacks.latent_embedding.num_points=50"],
    )
    proc = run_train(*args, f"hydra.run.dir={run}", *callback_overrides("fail", FailOnTest))
    # a bug: its traceback is shown
    assert proc.returncode == 1 and "the test pass failed" in proc.stderr
    fit = json.loads((run / "metrics.json").read_text())  # written after the fit, before the test
    assert (
        fit["epochs"] == 2
        and "val/loss" in fit["metrics"]
        and not any(k.startswith("test/") for k in fit["metrics"])
    )
    proc = run_train(*args, f"hydra.run.dir={run}", "resume=true")  # only the test pass is left
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = json.loads((run / "metrics.json").read_text())
    assert {k: v for k, v in done["metrics"].items() if not k.startswith("test/")} == fit["metrics"]
    assert (
        done["global_step"] == fit["global_step"] == 2 * STEPS_PER_EPOCH
        and "test/loss" in done["metrics"]
    )
    before = {
        p.name: p.read_bytes()
        for p in [run / "metrics.json", run / "run_info.json", *run.glob("checkpoints/*")]
    }
    # a requeued job of a complete run
    proc = run_train(*args, f"hydra.run.dir={run}", "resume=true")
    assert proc.returncode == 0 and f"hydra.run.dir={run} is complete (2 epochs" in proc.stdout, (
        proc.stderr[-3000:]
    )
    assert {
        p.name: p.read_bytes()
        for p in [run / "metrics.json", run / "run_info.json", *run.glob("checkpoints/*")]
    } == before
    proc = run_train(
        *args, f"hydra.run.dir={run}", "resume=true", "optimizer.lr=0.01", "trainer.max_epochs=3"
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: resume=true continues a run trained with optimizer.lr=0.001, "
        "but this command gives optimizer.lr=0.01: "
        "drop that override to continue the run, or start a new run (another hydra.run.dir) with it"
    )
    assert {p.name: p.read_bytes() for p in [run / "metrics.json", *run.glob("checkpoints/*")]} == {
        k: v for k, v in before.items() if k != "run_info.json"
    }


def test_two_sweeps_in_one_folder_never_train_in_the_same_job_folder(tiny_mnist, tmp_path):
    sweep_dir, marker = tmp_path / "sweep", tmp_path / "paused"
    # started together
    # (here: the CSV logger leaves no output the sweep's start-up check sees before the fit)
    args = [
        "-m",
        f"data.root={tiny_mnist}",
        *QUICK,
        f"hydra.sweep.dir={sweep_dir}",
        "model.latent_dim=4",
        "logger=csv",
    ]
    first = start_train(*args, *callback_overrides("pause", PauseInSetup, marker=marker))
    try:
        # the first sweep's job 0 holds its folder, with no output in it yet
        wait_for(marker, first)
        second = run_train(*args)
        assert second.returncode == 2, second.stderr[-3000:]
        assert (
            f"error: the sweep's job folder {sweep_dir / '0'} is in use by process {first.pid} on "
            in second.stderr
            and "choose another hydra.sweep.dir=..." in second.stderr
        ), second.stderr[-3000:]
        assert (
            not (sweep_dir / "0" / "checkpoints").exists()
            and not (sweep_dir / "0" / "run_info.json").exists()
        )
    finally:
        first.kill()
        first.wait()


def test_a_bug_in_a_researchers_callback_shows_its_traceback(tiny_mnist, tmp_path):
    proc = run_train(
        f"data.root={tiny_mnist}",
        *QUICK,
        f"hydra.run.dir={tmp_path / 'run'}",
        *callback_overrides("mine", BuggyCallback),
    )
    assert (
        proc.returncode == 1
        and "Traceback" in proc.stderr
        and "self.schedule = [0] * every + None" in proc.stderr
    )
    assert "check the callbacks.mine" not in proc.stderr


@pytest.mark.parametrize("stop", ["SIGTERM", "Ctrl-C", "SIGINT"])
def test_a_stopped_parallel_sweep_stops_every_job_and_each_saves(tiny_mnist, tmp_path, stop):
    """hydra/launcher=joblib trains the jobs in worker processes: SIGTERM to the command, Ctrl-C
    in its terminal (SIGINT to its whole process group) or SIGINT to the command alone (kill -INT)
    stops them all, each saving its last.ckpt and recording how to resume, and none is left
    training. Job 0 saves 3 s slower: the pool SIGKILLs every worker once one has ended, so the
    one that ends first must wait for it."""
    sweep, paused = tmp_path / "sweep", tmp_path / "paused"
    paused.mkdir()
    proc = start_train(
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={sweep}",
        f"data.root={tiny_mnist}",
        *QUICK,
        "seed=1,2",
        *callback_overrides("pause", PauseEachUntilSigterm, epoch=0, batch=3, folder=paused),
        *callback_overrides("slow", SlowSaveInJob, job=0, seconds=3),
        session=True,
    )
    deadline = time.monotonic() + 240
    while len(list(paused.iterdir())) < 2:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the jobs never reached the pause point"
        time.sleep(0.1)
    workers = [int(p.name) for p in paused.iterdir()]
    if stop == "Ctrl-C":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(getattr(signal, stop))
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == {"SIGTERM": 143, "Ctrl-C": 130, "SIGINT": 130}[stop], err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    for job in ("0", "1"):
        info = sweep / job / "run_info.json"
        assert info.exists(), err[-3000:]
        assert json.loads(info.read_text())["status"] == "interrupted", err[-3000:]
        assert (
            torch.load(sweep / job / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
            == 4
        )
        assert f"hydra.run.dir={sweep / job} resume=true" in err
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)  # no worker left training


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_real_full_disk_inside_torch_save_names_the_checkpoint_in_one_line(tmp_path):
    """torch's writer on a full device (/dev/full) fails with an OSError that names no file (its own
    'unexpected pos' RuntimeError as the context): the save names the checkpoint, and the boundary
    makes it one line."""
    from vae_lightning import boundary
    from vae_lightning.files import writing

    target = tmp_path / "checkpoints" / "last.ckpt"
    with pytest.raises(OSError) as raised:
        with writing(target), open("/dev/full", "wb") as f:
            torch.save({"w": torch.zeros(100_000)}, f)
            f.flush()
    assert raised.value.errno == 28 and raised.value.filename == str(target)
    line = str(boundary.user_error(raised.value))
    assert line.startswith(f"cannot use {target} (No space left on device): free some space"), line


class ReadOnlyAt(Callback):
    """Test instrumentation: at the start of ``epoch`` the run folder and all in it turn read-only
    (a quota, an admin, a mount remounted read-only)."""

    def __init__(self, epoch: int, folder: str) -> None:
        self.epoch, self.folder = epoch, Path(folder)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            for path in [self.folder, *self.folder.rglob("*")]:
                path.chmod(path.stat().st_mode & ~0o222)


def obeys_permissions() -> list[str] | None:
    """The command prefix under which this user's processes obey file permissions (root ignores
    them: capsh drops that capability), or None where none can be had."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("capsh"):
        return None
    prefix = ["capsh", "--drop=cap_dac_override", "--", "-c"]
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o555)
        probe = subprocess.run([*prefix, f"touch {folder}/x"], capture_output=True)
        os.chmod(folder, 0o755)
    return prefix if probe.returncode != 0 else None


def test_a_run_folder_turned_read_only_is_one_line_and_keeps_its_checkpoint(tiny_mnist, tmp_path):
    """The run folder turns read-only mid-run: the run ends with one line naming the file it could
    not write (no traceback, from the main thread or TensorBoard's writer thread), and the
    checkpoint written before is intact."""
    prefix = obeys_permissions()
    if prefix is None:
        pytest.skip("cannot run a process that obeys file permissions here")
    run = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "vae_lightning.train",
        f"data.root={tiny_mnist}",
        *QUICK,
        "trainer.max_epochs=3",
        f"hydra.run.dir={run}",
        *callback_overrides("read_only", ReadOnlyAt, epoch=1, folder=run),
    ]
    command = [*prefix, shlex.join(args)] if prefix else args
    try:
        proc = subprocess.run(command, cwd=REPO, env=command_env(), capture_output=True, text=True)
    finally:
        for path in [run, *run.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines[-1].startswith(f"error: cannot use {run}/") and "(Permission denied)" in lines[-1]
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["epoch"] == 0 and saved["global_step"] == STEPS_PER_EPOCH
    assert not (run / "metrics.json").exists()  # no record claims a result
