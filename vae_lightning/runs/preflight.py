"""What a training run checks of its own settings before anything is built: the entry point's keys
(seed, resume, tags...), the combinations that would only fail later or train nothing (a scheduler
watching a validation that never runs, trainer.max_epochs=0, nodes without a launcher). The
components check their own settings as they are built (runs/build.py).

Also: which checkpoint a run starts from (``resume=true``: the newest intact one of its folder), and
whether it fits the run (its model's class and shape, the settings a resumed run must keep, epochs
left to train).
"""

import os
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from vae_lightning.errors import (
    SettingError,
    UserError,
    accepted_settings,
    check_bool,
    check_float,
    check_int,
)
from vae_lightning.models.base import MODEL_CLASS
from vae_lightning.runs.checkpoints import readable_checkpoint
from vae_lightning.runs.record import result_settings

SEED_MAX = 2**32 - 1  # numpy's seed range, which Lightning's seed_everything uses


def _select(cfg: DictConfig, key: str):
    return OmegaConf.select(cfg, key, default=None)


def check_run_settings(cfg: DictConfig) -> None:
    """The entry point's own settings and the cross-checks between groups."""
    check_int("seed", cfg.get("seed"), low=0, example=42)
    if cfg.seed > SEED_MAX:
        raise SettingError(
            "seed", cfg.seed, f"must be <= {SEED_MAX} (numpy's seed range), e.g. seed=42"
        )
    check_bool("resume", cfg.get("resume", False))
    check_bool("test", cfg.get("test", True))
    tags = cfg.get("tags")
    if tags is not None and (
        not isinstance(tags, ListConfig) or not all(isinstance(t, (str, int)) for t in tags)
    ):
        raise SettingError("tags", tags, "must be a list of words, e.g. tags=[baseline,conv]")
    if cfg.get("threads") is not None:
        check_int(
            "threads",
            cfg.threads,
            low=1,
            example=2,
            note=" (or null: the cores divided among processes)",
        )
    check_float("optimizer.lr", _select(cfg, "optimizer.lr"), low=0, low_ok=False, example="1e-3")
    if _select(cfg, "eval.iw_samples") is not None:
        check_int("eval.iw_samples", _select(cfg, "eval.iw_samples"), low=1, example=5000)
    max_epochs = check_int(
        "trainer.max_epochs",
        _select(cfg, "trainer.max_epochs"),
        low=-1,
        example=50,
        note=" (-1 trains until stopped)",
    )
    if max_epochs == 0:
        raise SettingError(
            "trainer.max_epochs",
            0,
            "trains nothing: give a number of epochs >= 1 (or -1 to train until stopped)",
        )
    limit_train = _select(cfg, "trainer.limit_train_batches")
    if limit_train is not None and not isinstance(limit_train, bool) and limit_train == 0:
        raise SettingError(
            "trainer.limit_train_batches",
            limit_train,
            "trains nothing: give a fraction in (0, 1], a number of batches >= 1, or null for all",
        )
    for key, low in (
        ("gradient_clip_val", 0),
        ("log_every_n_steps", 1),
        ("num_sanity_val_steps", -1),
    ):
        value = _select(cfg, f"trainer.{key}")
        if value is not None:
            check_float(
                f"trainer.{key}",
                value,
                low=low,
                note=" (or null)" if key == "gradient_clip_val" else "",
            )
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
        value = _select(cfg, f"trainer.{key}")
        if value is not None and not (
            isinstance(value, int) and not isinstance(value, bool) and value >= 0
        ):
            check_float(
                f"trainer.{key}",
                value,
                low=0,
                note=" (a fraction <= 1, a number of batches, or null for all)",
            )
            if value > 1:
                raise SettingError(
                    f"trainer.{key}",
                    value,
                    "must be a fraction <= 1.0 or a whole number of batches",
                )
    if _select(cfg, "trainer.accumulate_grad_batches") is not None:
        check_int(
            "trainer.accumulate_grad_batches",
            _select(cfg, "trainer.accumulate_grad_batches"),
            low=1,
            example=1,
        )
    interval = _select(cfg, "trainer.val_check_interval")
    if interval is not None:
        check_float(
            "trainer.val_check_interval",
            interval,
            low=0,
            low_ok=False,
            note=" (a fraction of an epoch, or a number of batches)",
        )
    if str(_select(cfg, "trainer.precision")) in ("64", "64-true", "double"):
        raise SettingError(
            "trainer.precision",
            _select(cfg, "trainer.precision"),
            "is not supported: the likelihoods "
            "and bounds compute in fp32; use 32-true, bf16-mixed or 16-mixed",
            plain=True,
        )
    check_nodes(cfg)
    every = _select(cfg, "trainer.check_val_every_n_epoch")
    if every is not None:
        check_int("trainer.check_val_every_n_epoch", every, low=1, example=1, note=" (or null)")
    limit_val = _select(cfg, "trainer.limit_val_batches")
    validates = limit_val != 0 and every is not None and (max_epochs == -1 or every <= max_epochs)
    scheduler = cfg.get("scheduler") or {}
    target = str(scheduler.get("_target_", ""))
    if target.endswith("ReduceLROnPlateau") and not validates:
        raise UserError(
            "scheduler=plateau follows val/loss, but validation never runs "
            f"(trainer.limit_val_batches={limit_val}, trainer.check_val_every_n_epoch={every}, "
            f"trainer.max_epochs={max_epochs}): turn validation on, or use scheduler=none|cosine"
        )
    if limit_val != 0 and every is not None and not validates:
        raise SettingError(
            "trainer.check_val_every_n_epoch",
            every,
            f"is more than trainer.max_epochs={max_epochs}: validation would never run (no "
            "val/loss, no best checkpoint); lower it, or set trainer.limit_val_batches=0 to train "
            "without validation",
        )
    t_max = scheduler.get("T_max") if "T_max" in scheduler else None
    if t_max is not None and (isinstance(t_max, bool) or not isinstance(t_max, int) or t_max < 1):
        raise SettingError(
            "scheduler.T_max",
            t_max,
            "must be an integer >= 1 (epochs of one cosine cycle; scheduler=cosine takes "
            "trainer.max_epochs): set trainer.max_epochs to a number of epochs, or scheduler.T_max",
        )
    if cfg.get("resume") and cfg.get("ckpt_path"):
        raise UserError(
            f"resume=true continues this run folder's last.ckpt, ckpt_path={cfg.ckpt_path} "
            "another: drop one of them"
        )


def check_deleted_settings(cfg: DictConfig, overrides: list[str]) -> None:
    """``~model.latent_dim``: a setting of a component deleted from the command line would be built
    with the class's own default, which the run's records (metrics.json, HParams) would not show. A
    key the class does not take (``~model.net.hidden_dims`` for ConvNet) may go."""
    from hydra.utils import get_object

    for override in overrides:
        if not override.startswith("~"):
            continue
        parent, _, name = override[1:].split("=", 1)[0].rpartition(".")
        node = _select(cfg, parent) if parent else None
        if not OmegaConf.is_dict(node) or "_target_" not in node:
            continue
        try:
            target = get_object(str(node._target_))
        except Exception:  # not importable: the build says so
            continue
        if isinstance(target, type) and name in (accepted_settings(target) or ()):
            raise UserError(
                f"{override} would build {target.__name__} with its own default for "
                f"{parent}.{name}, which the run's records would not show: set "
                f"{parent}.{name}=<value> instead"
            )


def check_nodes(cfg: DictConfig) -> None:
    """trainer.num_nodes > 1 needs a launcher that started one process per node (srun, torchrun...):
    without one, the first process would wait for the others forever."""
    from lightning.fabric.plugins.environments import (
        LSFEnvironment,
        SLURMEnvironment,
        TorchElasticEnvironment,
    )

    nodes = _select(cfg, "trainer.num_nodes")
    if nodes is None:
        return
    check_int("trainer.num_nodes", nodes, low=1, example=1)
    launched = (
        SLURMEnvironment.detect(),
        TorchElasticEnvironment.detect(),
        LSFEnvironment.detect(),
        # by hand (or Kubeflow's): NODE_RANK on every node
        "NODE_RANK" in os.environ,
    )
    if nodes > 1 and not any(launched):
        raise SettingError(
            "trainer.num_nodes",
            nodes,
            "needs one process per node started by a launcher (SLURM's srun with trainer=slurm, "
            "torchrun, or by hand with NODE_RANK set), and none started this one: it would wait "
            "for the other nodes forever; use trainer.num_nodes=1 here",
            plain=True,
        )


def checkpoint_to_resume(cfg: DictConfig) -> tuple[str | None, dict | None]:
    """(checkpoint to start from, its contents, memory-mapped). ``resume=true``: this run folder's
    ``last.ckpt``, or if that is damaged the newest intact checkpoint beside it (said on stderr);
    UserError when there is none."""
    path = cfg.get("ckpt_path")
    if not cfg.get("resume"):
        if path is None:
            return None, None
        if not Path(str(path)).is_file():
            raise UserError(
                f"ckpt_path={path} is not a file: point it at a checkpoint, e.g. "
                "<run>/checkpoints/last.ckpt"
            )
        ckpt, why = readable_checkpoint(Path(str(path)))
        if ckpt is None:
            raise UserError(f"ckpt_path={path} {why}: point it at a .ckpt written by training")
        return str(path), ckpt
    folder = Path(cfg.paths.output_dir) / "checkpoints"
    last = folder / "last.ckpt"
    candidates = sorted(
        folder.glob("*.ckpt"), key=lambda p: (p == last, p.stat().st_mtime), reverse=True
    )
    if not candidates:
        raise UserError(
            f"resume=true but {last} does not exist: "
            "add hydra.run.dir=<the folder of the run to continue>"
        )
    damaged = []
    for candidate in candidates:
        ckpt, why = readable_checkpoint(candidate)
        if ckpt is None:
            damaged.append(f"{candidate.name} {why}")
            continue
        if damaged:
            print(
                f"warning: {'; '.join(damaged)}: resuming from {candidate} "
                f"(epoch {ckpt.get('epoch')}, step {ckpt['global_step']})",
                flush=True,
            )
        return str(candidate), ckpt
    raise UserError(
        f"resume=true but no checkpoint in {folder} can be read ({'; '.join(damaged)}): "
        "start a new run, or copy an intact checkpoint there"
    )


ARCHITECTURE = (
    "net",
    "prior",
    "posterior",
    "latent_dim",
    "latent_dims",
    "hidden_dims",
    "input_shape",
)
MAY_GROW = ("trainer.max_epochs",)  # a resumed run may train on


def check_checkpoint(ckpt_path: str, ckpt: dict, model, cfg: DictConfig) -> None:
    """The checkpoint a run starts from must hold a model of the configured class and shape; with
    resume=true the run must keep the settings it was trained with; with ckpt_path it must have
    epochs left to train."""
    trained, now = ckpt.get(MODEL_CLASS), f"{type(model).__module__}.{type(model).__qualname__}"
    if trained is not None and trained != now:
        raise UserError(
            f"ckpt_path={ckpt_path} holds a {trained.rsplit('.', 1)[-1]} but this run's model is "
            f"{now.rsplit('.', 1)[-1]}: choose the same model=..., or start without ckpt_path"
        )
    saved = ckpt.get("hyper_parameters", {})
    for key in ARCHITECTURE:
        if key in saved and key in model.hparams and saved[key] != model.hparams[key]:
            if key == "input_shape":  # the data, not a model setting, differs
                raise UserError(
                    f"ckpt_path={ckpt_path} holds a model of {list(saved[key])} images, but this "
                    f"run's data are {list(model.hparams[key])}: use the data it was trained on "
                    "(data=...), or start without ckpt_path"
                )
            raise UserError(
                f"ckpt_path={ckpt_path} holds a model with model.{key}={saved[key]}, but this "
                f"run's is {model.hparams[key]}: drop the model overrides, or start without "
                "ckpt_path"
            )
    if cfg.get("resume"):
        check_resume_keeps_settings(ckpt.get("run_config"), model.run_config)
    else:
        done, max_epochs = int(ckpt.get("epoch", -1)) + 1, cfg.trainer.max_epochs
        if max_epochs != -1 and done >= max_epochs:
            raise UserError(
                f"ckpt_path={ckpt_path} ends epoch {done} but trainer.max_epochs={max_epochs}: "
                f"nothing would be trained; set trainer.max_epochs above {done} (the total number "
                "of epochs, counting those in the checkpoint)"
            )


def check_resume_keeps_settings(saved: dict | None, config: dict) -> None:
    """resume=true continues a run: a setting that defines its result (model, optimizer, scheduler,
    data, seed) must be the one it was trained with (its checkpoint's ``run_config``), or the run
    would continue with the old value while its records say the new one. ``trainer.max_epochs`` may
    grow; where the data lies may change."""
    if not saved:
        return
    before, now = result_settings(saved), result_settings(config)
    for key in sorted(set(before) | set(now)):
        if key in MAY_GROW or before.get(key) == now.get(key):
            continue
        raise UserError(
            f"resume=true continues a run trained with {key}={before.get(key)}, but this command "
            f"gives {key}={now.get(key)}: drop that override to continue the run, or start a new "
            "run (another hydra.run.dir) with it"
        )
