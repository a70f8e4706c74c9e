"""A training run's one build: every component from the composed config, each checking its own
settings as it is built, before the run folder exists; the same objects are then trained.

    build_run(cfg)   the run's checks and components: DataModule, model (network, prior, posterior,
                     optimizer and scheduler factories), callbacks, loggers and the Trainer, and the
                     checkpoint it starts from
    BuildRun         the Hydra callback that calls it for a single run before Hydra makes the run
                     folder (a sweep's jobs build in their own job, where a refused one is a failed
                     row; each value of a sweep is composed once before its folder exists)

What a library refuses (torch's optimizer, Lightning's Trainer and callbacks) is named by the
setting whose removal makes the library accept the rest: its message is shown, never parsed.
"""

import contextlib
import copy
import difflib
import logging
import os
from dataclasses import dataclass
from logging.handlers import BufferingHandler

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf, open_dict

from vae_lightning.data.download import reachable
from vae_lightning.errors import (
    SettingError,
    UserError,
    exit_with,
    first_line,
    instantiate_component,
)
from vae_lightning.runs.checkpoints import AtomicCheckpointIO, RunCheckpoint
from vae_lightning.runs.preflight import (
    check_checkpoint,
    check_deleted_settings,
    check_run_settings,
    checkpoint_to_resume,
)

LIBRARIES = ("lightning.", "pytorch_lightning.", "torch.", "torchmetrics.")
# how torch and Lightning refuse a setting
REFUSALS = (ValueError, TypeError, MisconfigurationException)


@dataclass
class Run:
    """What a training run trains: built once, from one composed config."""

    datamodule: L.LightningDataModule
    model: L.LightningModule
    trainer: L.Trainer
    ckpt_path: str | None  # the checkpoint the fit starts from (resume=true or ckpt_path=...)
    # what Lightning said while the Trainer was built, said by say_held once the run starts
    messages: list[logging.LogRecord]


def task_config(cfg: DictConfig) -> dict:
    """The run's composed config, resolved, without Hydra's own section: what checkpoints record as
    run_config."""
    return {
        k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
        for k, v in cfg.items()
        if k != "hydra"
    }


def refused(where: str, config: DictConfig, error: BaseException, attempt) -> UserError:
    """A library refused the settings under ``where``: the one whose removal lets
    ``attempt(config)`` succeed is named with the library's message; else the section is."""
    message = first_line(error)
    # the last keys first: a key the command line added (+key=...) comes after the config's own
    for key in reversed([k for k in config if not str(k).startswith("_")]):
        trial = copy.deepcopy(config)
        with open_dict(trial):
            del trial[key]
        try:
            with held_messages():  # the trial builds say nothing
                attempt(trial)
        except Exception:
            continue
        value = OmegaConf.to_container(config, resolve=True)[key]
        return SettingError(f"{where}.{key}", value, f"is refused: {message}", plain=True)
    return UserError(f"{where}: {message}: check the {where}.* settings (--cfg job shows them)")


def build_component(config: DictConfig, where: str, **kwargs):
    """``instantiate`` a callback, logger or the Trainer. A refusal by Lightning's own checks
    (MisconfigurationException, also in a subclass) or a library class's ValueError/TypeError
    becomes a line naming the setting; a class of the project or of its user brings its own checks
    (SettingError): anything else it raises is a bug, shown with its traceback."""
    if not OmegaConf.is_dict(config) or "_target_" not in config:
        raise UserError(
            f"{where} has no _target_ (a class to build): give {where}._target_=module.ClassName, "
            f"or drop it with ~{where}"
        )
    try:
        return instantiate_component(config, where, **kwargs)
    except InstantiationException as e:
        library = str(config.get("_target_", "")).startswith(LIBRARIES)
        if isinstance(e.__cause__, MisconfigurationException) or (
            library and isinstance(e.__cause__, REFUSALS)
        ):
            raise refused(
                where, config, e.__cause__, lambda trial: instantiate(trial, **kwargs)
            ) from None
        raise


def check_optimizer(cfg: DictConfig) -> None:
    """torch checks the optimizer's and scheduler's settings when they are built on parameters:
    build them once on a dummy one, so a refused value is one line now rather than a traceback when
    the fit starts."""
    param = torch.nn.Parameter(torch.zeros(1))

    def optimizer(config):
        built = instantiate(config)([param])
        param.grad = torch.zeros_like(param)
        built.step()  # some settings are read by the first step only (fused kernels, amsgrad)
        return built

    try:
        built = optimizer(cfg.optimizer)
    except SettingError as e:  # an optimizer's own check (optimizers.py), named from the top
        raise e.under("optimizer") from None
    except (*REFUSALS, RuntimeError, IndexError, InstantiationException) as e:
        cause = e.__cause__ or e
        library = str(cfg.optimizer.get("_target_", "")).startswith(LIBRARIES)
        if not library and not isinstance(cause, (*REFUSALS, InstantiationException)):
            raise  # a researcher's optimizer: its traceback
        raise refused("optimizer", cfg.optimizer, cause, optimizer) from None
    if any(group.get("eps", 1) == 0 for group in built.param_groups):  # torch takes it: NaN
        raise SettingError(
            "optimizer.eps",
            0,
            "divides by zero wherever a gradient is 0 (the update is m / (sqrt(v) "
            "+ eps)): use a small positive value, e.g. optimizer.eps=1e-8",
            plain=True,
        )
    if cfg.get("scheduler"):
        try:
            instantiate(cfg.scheduler)(built)
        except SettingError as e:  # a schedule's own check, named from the config's top
            raise e.under("scheduler") from None
        except (*REFUSALS, InstantiationException) as e:
            raise refused(
                "scheduler", cfg.scheduler, e.__cause__ or e, lambda c: instantiate(c)(built)
            ) from None


def build_model(cfg: DictConfig, datamodule):
    """The LightningModule of ``model``: it takes its image shape and pixel range from the data."""
    scheduler = instantiate_component(cfg.scheduler, "scheduler") if cfg.get("scheduler") else None
    return instantiate_component(
        cfg.model,
        "model",
        input_shape=datamodule.image_shape,
        data_range=datamodule.data_range,
        pixel_levels=datamodule.pixel_levels,
        scheduler=scheduler,
        optimizer=instantiate_component(cfg.optimizer, "optimizer"),
    )


def check_monitor(where: str, callback, model) -> None:
    """A callback that follows a metric (early stopping, checkpointing) must not follow a misspelt
    one: Lightning would only notice at the end of the first epoch. A name close to one the model
    logs is refused."""
    monitor = getattr(callback, "monitor", None)
    terms = getattr(model, "logged_terms", None)
    if not isinstance(monitor, str) or terms is None:
        return
    known = [f"{stage}/{term}" for stage in ("train", "val") for term in terms(stage)]
    close = difflib.get_close_matches(monitor, known, n=1, cutoff=0.75)
    if monitor not in known and close:
        raise SettingError(
            f"{where}.monitor",
            monitor,
            f"is not a metric the model logs (did you mean {close[0]}?): "
            f"it logs {', '.join(known)}",
        )


def has_summary(callbacks: list) -> bool:
    from lightning.pytorch.callbacks import ModelSummary

    return any(isinstance(c, ModelSummary) for c in callbacks)


def build_trainer(cfg: DictConfig, model, resume_step: int | None = None) -> tuple[L.Trainer, list]:
    """The Trainer with the run's callbacks and loggers, and what Lightning said while building it.

    ``resume_step``: TensorBoard hides what an interrupted run logged from this step on, so a
    resumed run's curves continue without duplicates."""
    chosen = dict(cfg.get("callbacks") or {})
    if not cfg.trainer.get("enable_progress_bar", True):  # trainer.enable_progress_bar=false
        chosen.pop("progress_bar", None)
    if not cfg.trainer.get("enable_model_summary", True):  # trainer.enable_model_summary=false
        chosen.pop("model_summary", None)
    callbacks = []
    for name, c in chosen.items():
        if c:
            callbacks.append(build_component(c, f"callbacks.{name}"))
            check_monitor(f"callbacks.{name}", callbacks[-1], model)
    loggers = []
    for name, c in (cfg.get("logger") or {}).items():
        server = str(c.get("tracking_uri") or "") if OmegaConf.is_dict(c) else ""
        if server.startswith(("http://", "https://")) and not reachable(server):
            raise SettingError(  # the client would retry for minutes, then fail
                f"logger.{name}.tracking_uri",
                server,
                "does not answer (no server accepts a connection there): start the server, or "
                "drop the setting for the local store",
                plain=True,
            )
        if c:
            purge = (
                {"purge_step": resume_step} if resume_step and "TensorBoard" in c._target_ else {}
            )
            loggers.append(build_component(c, f"logger.{name}", **purge))
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise SettingError(
            "trainer.accelerator",
            accelerator,
            "but torch sees no GPU on this machine: use trainer.accelerator=cpu (or auto)",
            plain=True,
        )
    # "GPU available...": said when the run starts, not for a refused one
    with held_messages() as messages:
        trainer = build_component(
            cfg.trainer,
            "trainer",
            callbacks=callbacks,
            logger=loggers or False,
            plugins=[AtomicCheckpointIO()],
            # the run's own layer table (callbacks.model_summary) replaces Lightning's default
            **({"enable_model_summary": False} if has_summary(callbacks) else {}),
        )
    asked = OmegaConf.select(cfg, "trainer.precision")
    # float16 on a CPU: Lightning runs bfloat16 instead (its aliases, 32 for 32-true..., are fine)
    if "16" in str(asked) and "bf16" not in str(asked) and "bf16" in str(trainer.precision):
        raise SettingError(
            "trainer.precision",
            asked,
            f"is not available here: Lightning would run {trainer.precision} instead (and the "
            f"run's records would say {asked}); set trainer.precision={trainer.precision}, or "
            "32-true",
            plain=True,
        )
    return trainer, messages


@contextlib.contextmanager
def held_messages(names=("lightning.pytorch", "lightning.fabric")):
    """Inside, what Lightning's loggers say is held back (a list of records), to be said by
    ``say_held``."""
    hold, logs = BufferingHandler(capacity=10_000), [logging.getLogger(name) for name in names]
    saved = [(log.handlers, log.propagate) for log in logs]
    for log in logs:
        log.handlers, log.propagate = [hold], False
    try:
        yield hold.buffer
    finally:
        for log, (handlers, propagate) in zip(logs, saved):
            log.handlers, log.propagate = handlers, propagate


def say_held(run: Run) -> None:
    """Say what Lightning said while the run's Trainer was built (to the terminal and the run's log
    files)."""
    for record in run.messages:
        logging.getLogger(record.name).handle(record)
    run.messages = []


def command_line() -> list[str]:
    """The run's overrides, as Hydra parsed them (none outside a Hydra run)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # HydraConfig not set: built outside Hydra (a test, a notebook)
        return []


def build_run(cfg: DictConfig) -> Run:
    """Check the run's settings, read the checkpoint it starts from, build every component (seeded,
    so the weights are the seed's); nothing is written, and no data is read yet."""
    check_run_settings(cfg)
    check_deleted_settings(cfg, command_line())
    ckpt_path, ckpt = checkpoint_to_resume(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate_component(cfg.data, "data")
    model = build_model(cfg, datamodule)
    model.run_config = task_config(cfg)
    check_optimizer(cfg)
    if ckpt_path:
        check_checkpoint(ckpt_path, ckpt, model, cfg)
    trainer, messages = build_trainer(
        cfg, model, resume_step=int(ckpt["global_step"]) if cfg.get("resume") else None
    )
    if ckpt_path and not cfg.get("resume"):  # a new run: its best checkpoint is one of its own
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, RunCheckpoint):
                callback.continues_run = False
    return Run(datamodule, model, trainer, ckpt_path, messages)


_built: Run | None = None


def take_built() -> Run | None:
    """The Run that BuildRun built for this process's single run (once), else None."""
    global _built
    run, _built = _built, None
    return run


class BuildRun(Callback):
    """Hydra callback: a single run is built before Hydra makes its folder, so a refused one leaves
    none; each value of a sweep is composed once before Hydra makes the sweep's folder, so a command
    line that does not compose leaves none either."""

    def on_multirun_start(self, config: DictConfig, config_name: str, **kwargs) -> None:
        from hydra.core.global_hydra import GlobalHydra

        from vae_lightning import boundary

        boundary.composed.append(True)
        loader = GlobalHydra.instance().config_loader()
        try:
            probes = boundary.sweep_probes(list(config.hydra.overrides.task)) or []
        except UserError as e:  # Hydra would turn it into a warning
            exit_with(e)
        for job in probes:
            try:
                loader.load_sweep_config(config, job)
            except Exception as e:  # Hydra turns a callback's exception into a warning: exit here
                if boundary.full_error():
                    raise
                exit_with(boundary.composition_error(e, config_name, job))

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        from vae_lightning import boundary

        global _built
        boundary.composed.append(True)
        # what run_job sets next: ${paths.output_dir} resolves now
        with open_dict(config.hydra.runtime):
            config.hydra.runtime.output_dir = os.path.abspath(str(config.hydra.run.dir))
        from hydra.core.hydra_config import HydraConfig

        HydraConfig.instance().set_config(config)
        try:
            _built = build_run(config)
        except Exception as e:
            exit_with(boundary.report(e))
