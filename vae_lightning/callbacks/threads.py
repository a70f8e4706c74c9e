"""CPU runs at the speed of the cores: threads per process, so runs and ranks that share a machine
do not fight over its cores, no CUDA probe at every optimizer step, and no denormal arithmetic."""

import os

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (what ``taskset``, SLURM's
    ``--cpus-per-task`` or a container's cpuset leave it), not every core of the machine, which
    ``os.cpu_count()`` counts. Threads beyond the allowed cores only wait for each other."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def parallel_jobs() -> int:
    """How many jobs of this sweep run at once on this machine (joblib's ``n_jobs``; 1 for other
    launchers)."""
    if not HydraConfig.initialized():
        return 1
    n_jobs = int(HydraConfig.get().launcher.get("n_jobs", 1) or 1)
    return usable_cores() if n_jobs < 0 else n_jobs


def flush_denormals() -> None:
    """Floats below 1.2e-38 count as 0 in this process's CPU arithmetic (torch.set_flush_denormal).
    Such numbers appear as training goes on, and the CPU computes each one far more slowly:
    measured here, the plain bf16 loop's epochs went from 4.6-5.0 s (the first) to 6.8-6.9 s (the
    fifth) without it, and stayed at 4.2-4.3 s with it, with the same validation loss to the third
    decimal. The setting is per thread and torch's worker threads copy it when they start, so the
    training entry point calls this first, before anything computes (README, Speed)."""
    torch.set_flush_denormal(True)  # False where the CPU cannot: then nothing changes


class CpuThreads(L.Callback):
    """Set torch's intra-op threads of each training process on a CPU: ``threads``, or (None) the
    cores it may use (``usable_cores``) divided by the processes sharing them - the parallel jobs
    of a joblib sweep times this run's DDP ranks on the node. Without it each process spins one
    thread per core, and two processes on two cores run many times slower than one after the
    other."""

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.strategy.root_device.type != "cpu":
            return
        # Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 (a fork-safe CUDA check); torch's Adam asks
        # whether CUDA is available at every step, which then loads NVML again each time: ~70 us per
        # step on a CPU run. Without it torch answers from its cached device count. A CPU run uses
        # no CUDA, so fork safety is not at stake.
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
        sharing = parallel_jobs() * max(1, trainer.world_size // max(1, trainer.num_nodes))
        torch.set_num_threads(self.threads or max(1, usable_cores() // sharing))
