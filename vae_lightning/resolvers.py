"""OmegaConf resolvers the configs use; registered once on import of an entry point."""

import os
import secrets
import time
from pathlib import Path

from omegaconf import OmegaConf

REPO_ROOT = Path(__file__).resolve().parents[1]


def register_resolvers() -> None:
    # ${repo_root:} -> the checkout this package lives in (default home of data/).
    OmegaConf.register_new_resolver("repo_root", lambda: str(REPO_ROOT), replace=True)
    # ${uid:} -> a random suffix (one per config): two sweeps started in the same second never share
    # a folder.
    OmegaConf.register_new_resolver(
        "uid", lambda: secrets.token_hex(3), use_cache=True, replace=True
    )
    # ${run_id:} -> a run folder's name: <date>_<time>_<random>, or slurm-<job id>[.<step>] for the
    # tasks srun starts together (trainer=slurm), so that they all name the same folder.
    OmegaConf.register_new_resolver("run_id", run_id, use_cache=True, replace=True)
    # ${run_label:} -> what names a run in the loggers and the sweep summary: the command line's
    # settings that shape the result (model, optimizer, data, seed...; no paths), e.g.
    # "model.latent_dim=2 optimizer.lr=0.001".
    OmegaConf.register_new_resolver("run_label", run_label, replace=True)
    # ${sweep_label:} -> in a sweep, the job's values of the settings the sweep varies
    # ("model.latent_dim=2, optimizer.lr=0.001"): the TensorBoard run's name. Outside a sweep: ""
    # (events go straight into <run>/tensorboard).
    OmegaConf.register_new_resolver("sweep_label", sweep_label, replace=True)
    # ${trial_name:} -> the run's row in TensorBoard's HParams table (see trial_name).
    OmegaConf.register_new_resolver("trial_name", trial_name, replace=True)
    # ${auto_precision:${trainer.accelerator}} -> bf16-mixed on a CPU with native bf16 (AVX-512 BF16
    # or AMX), else 32-true.
    OmegaConf.register_new_resolver("auto_precision", auto_precision, replace=True)
    # ${tags_dict:${tags}} -> {"tag": "true", ...}: MLflow's tags are a dict, W&B's a list.
    OmegaConf.register_new_resolver(
        "tags_dict", lambda tags: {str(t): "true" for t in tags or []}, replace=True
    )


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (Linux: the avx512_bf16 or amx_bf16 flag). Elsewhere
    False: bf16 emulated in software is slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def auto_precision(accelerator: str = "auto") -> str:
    """trainer.precision's default: bf16-mixed where training runs on a CPU that has native bf16
    (1.2-1.3x faster per epoch here, the ELBO as good: README, Speed), else 32-true (GPUs included:
    not measured yet)."""
    import torch

    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    return "bf16-mixed" if on_cpu and cpu_has_bf16() else "32-true"


def slurm_step() -> str | None:
    """slurm-<job id>[.<step id>] inside a SLURM step of several tasks (srun --ntasks-per-node=N),
    else None."""
    env = os.environ
    if (
        int(env.get("SLURM_NTASKS", "1") or 1) <= 1
        or "SLURM_JOB_ID" not in env
        or "SLURM_PROCID" not in env
    ):
        return None
    step = env.get("SLURM_STEP_ID", "0")
    return f"slurm-{env['SLURM_JOB_ID']}" + ("" if step == "0" else f".{step}")


def override_key(override: str) -> str:
    """ "+model.x=1" -> "model.x": the key (or group) a command-line override sets."""
    return override.split("=", 1)[0].lstrip("+~")


def run_id() -> str:
    return slurm_step() or f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{secrets.token_hex(3)}"


def swept_keys(hydra) -> set[str]:
    """The keys a multirun varies: its command line's sweep overrides (a=1,2 / range / choice, as
    Hydra recorded them in <sweep>/multirun.yaml) and a sweeper's own search space
    (hydra.sweeper.params, e.g. Optuna's)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys = {str(k) for k in (hydra.sweeper.get("params") or {})}
    try:
        recorded = OmegaConf.load(Path(hydra.sweep.dir) / "multirun.yaml").hydra.overrides.task
        overrides = OverridesParser.create().parse_overrides([str(o) for o in recorded])
    # no multirun.yaml (e.g. a job rerun by hand): fall back to the sweeper's params
    except Exception:
        return keys
    return keys | {o.key_or_group for o in overrides if o.is_sweep_override()}


def sweep_label() -> str:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return ""
    hydra = HydraConfig.get()
    keys = swept_keys(hydra)
    chosen = [o.lstrip("+~") for o in hydra.overrides.task if override_key(o) in keys]
    label = ",".join(chosen) or run_label().replace(" ", ",")
    return label.replace("/", ".")  # model/net=conv names one folder, not two


def trial_name() -> str:
    """The run's name in TensorBoard's HParams table, whose first column shows about 15 characters:
    what tells the rows apart comes first, then the folder, which keeps the name unique across
    sweeps (TensorBoard merges rows of the same name). In a sweep: "3: model.latent_dim=8,
    optimizer.lr=0.003 (<sweep folder>)"; else "model.latent_dim=8 (<run folder>)", or the run
    folder's name when the command line sets nothing that shapes the result."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return ""
    hydra = HydraConfig.get()
    if hydra.mode == RunMode.MULTIRUN:
        return f"{hydra.job.num}: {sweep_label()} ({Path(hydra.sweep.dir).name})"
    label, folder = run_label(), Path(hydra.runtime.output_dir).name
    return folder if label == folder else f"{label} ({folder})"


def run_label() -> str:
    """The command line's overrides that shape the result, or the run folder's name when there are
    none."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return ""
    from vae_lightning.runs.record import defines_result

    hydra = HydraConfig.get()
    chosen = [
        override for override in hydra.overrides.task if defines_result(override_key(override))
    ]
    return " ".join(chosen) or Path(hydra.runtime.output_dir).name
