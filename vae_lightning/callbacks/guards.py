"""Callbacks that protect a long run: stop at the first NaN/inf, save a checkpoint on Ctrl-C or
SIGTERM (also when the run's ranks train in processes of their own: ``stops_reach_ranks``)."""

import contextlib
import logging
import math
import os
import shlex
import signal
import sys
import threading
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.multiprocessing import ProcessExitedException

from vae_lightning.errors import UserError, check_int
from vae_lightning.files import append_to_log_files

SIGTERM_EXIT = 128 + signal.SIGTERM  # the shell's code for a process ended by SIGTERM


class Diverged(UserError):
    """The loss or the weights stopped being finite."""


class DivergenceGuard(Callback):
    """Stop at a non-finite loss or a negative learning rate, and never let a checkpoint save
    non-finite weights.

    The loss is checked every ``check_every_n_steps`` training steps; ``None`` means every step on
    CPU (free) and every 50 on an accelerator (each check waits for the device). Before every
    checkpoint save the weights themselves are checked (one device sync per save), so a NaN that
    slips between two loss checks still cannot replace the last good checkpoint.
    """

    def __init__(self, check_every_n_steps: int | None = None) -> None:
        if check_every_n_steps is not None:
            check_int(
                "check_every_n_steps", check_every_n_steps, low=1, example=50, note=" (or null)"
            )
        self.check_every_n_steps = check_every_n_steps

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.check_every_n_steps is None:
            self.check_every_n_steps = 1 if trainer.strategy.root_device.type == "cpu" else 50

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # a scheduler can take the rate below zero (cosine's eta_min < 0...): the loss would climb
        # (a plain float each; a tensor rate, which reading would sync with the device, is left)
        rates = [
            g["lr"]
            for o in trainer.optimizers
            for g in o.param_groups
            if not isinstance(g["lr"], torch.Tensor)
        ]
        if any(lr < 0 for lr in rates):
            cb = trainer.checkpoint_callback
            last = cb.last_model_path if cb else ""
            raise Diverged(
                f"the learning rate became {min(rates):g} at epoch "
                f"{trainer.current_epoch}, step {trainer.global_step}: a learning rate must not be "
                "negative; check the scheduler.* settings (--cfg job shows them)"
                + (f"; the last good checkpoint is {last}" if last else "")
            )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.check_every_n_steps == 0 or trainer.is_last_batch:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            if loss is not None and not math.isfinite(loss.item()):  # one read, no torch op
                first = trainer.global_step <= 1 and trainer.current_epoch == 0 and batch_idx == 0
                self._stop(trainer, f"train/loss is {loss.item()}", before_any_update=first)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        finite = torch.stack([p.detach().isfinite().all() for p in pl_module.parameters()]).all()
        if not finite.item():
            self._stop(trainer, "the weights hold NaN/inf")

    @staticmethod
    def _stop(trainer: L.Trainer, what: str, before_any_update: bool = False) -> None:
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        last = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else ""
        kept = f"the last good checkpoint is {last}" if last else "no checkpoint was saved before"
        precision = (
            ""
            if trainer.precision == "32-true"
            else f" or use trainer.precision=32-true (now {trainer.precision})"
        )
        # the first batch's loss, computed with the initial weights: lr played no part
        if before_any_update:
            raise Diverged(
                f"the loss is not finite before the first update ({what}): not the learning rate "
                "but the data or the model's settings (model.*, data.mean/std) make it so; "
                "check them with --cfg job; nothing was saved"
            )
        raise Diverged(
            f"training diverged at epoch {trainer.current_epoch}, step {trainer.global_step}: "
            f"{what}; lower optimizer.lr (now {lr:g}){precision}; {kept}"
        )


class InterruptCheckpoint(Callback):
    """Ctrl-C (KeyboardInterrupt) or SIGTERM (what SLURM, Kubernetes and ``timeout`` send; Lightning
    stops after the current batch) saves ``<dirpath>/last.ckpt`` mid-epoch, so ``resume=true``
    continues from it.

    With several ranks (``trainer=ddp``) the ranks stop together: a SIGTERM only marks this rank
    (in place of Lightning's handler, which stops each rank on its own and runs a collective inside
    the handler, so ranks could wait for each other forever), and at the start of each batch the
    ranks agree whether any was marked; then they save together before that batch and each ends
    its process, rank zero with exit code 143 (``stops_reach_ranks`` in the
    process that started them passes its SIGTERM on to them and reads that code).

    Other exceptions save nothing (a diverged model must not replace the last good checkpoint).
    Not Lightning's OnExceptionCheckpoint: its presence turns every ``fit()`` into
    ``ckpt_path="last"``.
    """

    def __init__(self, dirpath: str, filename: str = "last.ckpt") -> None:
        self.ckpt_path = str(Path(dirpath) / filename)
        self.run_dir = (
            Path(dirpath).parent if Path(dirpath).name == "checkpoints" else Path(dirpath)
        )
        self.sigterm = False  # this rank was sent SIGTERM (several ranks only)

    def _mark_sigterm(self, trainer: L.Trainer) -> None:
        if trainer.world_size > 1 and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda signum, frame: setattr(self, "sigterm", True))

    def _stop_together(self, trainer: L.Trainer) -> None:
        if trainer.world_size > 1 and trainer.strategy.reduce_boolean_decision(
            self.sigterm, all=False
        ):
            # a spawned rank's exception reaches no on_exception hook: save and flush here
            if trainer.state.fn == "fit":
                self._save(trainer, "stopped by SIGTERM")
            for logger in trainer.loggers:
                logger.finalize("failed")
            # rank zero, the last to finish (it writes), brings the code to the starting process
            raise SIGTERMException(SIGTERM_EXIT if trainer.is_global_zero else 0)

    # before Lightning registers its handler (so its teardown restores ours), and after it
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._mark_sigterm(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mark_sigterm(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mark_sigterm(trainer)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mark_sigterm(trainer)

    # every rank runs the same number of batches of each split (equal shards)
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._stop_together(trainer)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._stop_together(trainer)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._stop_together(trainer)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if (
            isinstance(exception, (KeyboardInterrupt, SIGTERMException))
            and trainer.state.fn == "fit"
        ):
            what = (
                "interrupted" if isinstance(exception, KeyboardInterrupt) else "stopped by SIGTERM"
            )
            self._save(trainer, what)

    def _save(self, trainer: L.Trainer, what: str) -> None:
        trainer.save_checkpoint(self.ckpt_path, weights_only=False)  # every rank: rank zero writes
        if trainer.is_global_zero:
            line = (
                f"{what} at epoch {trainer.current_epoch}, step {trainer.global_step}: "
                f"saved {self.ckpt_path}; to continue, {resume_hint(self.run_dir)}\n"
            )
            # one write: processes stopped together (a sweep's workers) keep a line each
            sys.stderr.write(line)
            sys.stderr.flush()
            append_to_log_files(line)


def resume_hint(run_dir: Path) -> str:
    """How to continue a stopped run: the same command with its folder and resume=true (for a run
    that ``make train ARGS=...`` started, that make command)."""
    if os.environ.get("VAE_LIGHTNING_MAKE") == "train":  # set by the Makefile's train target
        kept = [a for a in sys.argv[1:] if not a.startswith(("hydra.run.dir=", "resume="))]
        args = " ".join([*kept, f"hydra.run.dir={run_dir}", "resume=true"])
        return f"run: make train ARGS={shlex.quote(args)}"
    return f"run the same command with {shlex.quote(f'hydra.run.dir={run_dir}')} resume=true"


@contextlib.contextmanager
def stops_reach_ranks(trainer: L.Trainer):
    """Around ``trainer.fit``/``test`` in the process of the run: when the strategy starts the ranks
    as processes of their own (``trainer=ddp``: spawn), Lightning watches SIGTERM in the ranks only,
    so this process would die at once and leave them. Here it passes SIGTERM on to every rank (each
    saves, see InterruptCheckpoint), and the ranks' SIGTERM exit is raised as SIGTERMException, as
    a fit in this process raises it."""
    launcher = trainer.strategy.launcher
    in_main_thread = threading.current_thread() is threading.main_thread()
    if getattr(launcher, "procs", None) is None or not in_main_thread:
        yield  # the ranks (or the one process) train in this process
        return
    spawn_log = logging.getLogger("torch.multiprocessing.spawn")
    level = spawn_log.level

    def pass_on(signum, frame) -> None:
        spawn_log.setLevel(logging.ERROR)  # not its "Terminating process" as the ranks end
        launcher.kill(signum)

    before = signal.signal(signal.SIGTERM, pass_on)
    try:
        yield
    except ProcessExitedException as e:
        if e.exit_code not in (SIGTERM_EXIT, -signal.SIGTERM):
            raise
        raise SIGTERMException(SIGTERM_EXIT) from None
    finally:
        signal.signal(signal.SIGTERM, before)
        spawn_log.setLevel(level)
