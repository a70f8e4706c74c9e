"""DDP that fits Hydra's one-process-per-run model (``trainer=ddp``).

Lightning's default DDP launcher re-runs the command line once per extra rank; under Hydra
that makes a run folder per rank (and re-runs a whole ``-m`` sweep per rank). Here the run's
own process spawns its ranks (torch.multiprocessing, Lightning's ``ddp_spawn``), so the run
folder, ``metrics.json`` and the sweep belong to that one process; rank zero of the spawned
workers logs and checkpoints into the same folder.

Lightning sends back only the last weights, the best checkpoint path and ``callback_metrics``
from rank zero; the launcher below also sends the training progress (epochs, steps) and the
checkpoint callback's state (best score), so the run's process reports what the ranks did.
"""

import io

import torch
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher


class _Launcher(_MultiProcessingLauncher):
    def get_extra_results(self, trainer) -> dict:
        extra = super().get_extra_results(trainer)
        state = {"fit_loop": trainer.fit_loop.state_dict()}
        if trainer.checkpoint_callback is not None:
            state["checkpoint"] = trainer.checkpoint_callback.state_dict()
        buffer = io.BytesIO()
        torch.save(state, buffer)  # as bytes: tensors in shared memory would die with the worker
        return extra | {"state_bytes": buffer.getvalue()}

    def update_main_process_results(self, trainer, extra: dict) -> None:
        super().update_main_process_results(trainer, extra)
        state = torch.load(io.BytesIO(extra["state_bytes"]), weights_only=False)
        trainer.fit_loop.load_state_dict(state["fit_loop"])
        if trainer.checkpoint_callback is not None and "checkpoint" in state:
            trainer.checkpoint_callback.load_state_dict(state["checkpoint"])


class SpawnDDPStrategy(DDPStrategy):
    """DDP whose ranks are spawned by the run's process (gloo on CPU, nccl on GPU by default)."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("start_method", "spawn")
        super().__init__(**kwargs)

    def _configure_launcher(self) -> None:
        self._launcher = _Launcher(self, start_method=self._start_method)
