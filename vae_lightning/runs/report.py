"""What a run shows, and leaves in its folder besides checkpoints and metrics: the composed config
as a tree at the start (also ``<run>/config_tree.log``), a short summary at the end, and Lightning's
console messages in ``<run>/train.log`` beside ours."""

import io
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.syntax import Syntax
from rich.tree import Tree

log = logging.getLogger("vae_lightning")
ORDER = ("data", "model", "optimizer", "scheduler", "trainer", "callbacks", "logger", "paths")
FULL_WIDTH = 10_000  # a file, nohup or SLURM's log: whole lines (Rich would cut them at 80 columns)


def config_tree(cfg: DictConfig) -> Tree:
    """The resolved config, one branch per group (data, model... first), each as YAML."""
    tree = Tree("config", guide_style="dim")
    keys = [k for k in ORDER if k in cfg] + [k for k in cfg if k not in ORDER and k != "hydra"]
    for key in keys:
        value = cfg[key]
        text = (
            OmegaConf.to_yaml(value, resolve=True)
            if isinstance(value, DictConfig)
            else f"{value}\n"
        )
        tree.add(str(key), guide_style="dim").add(
            Syntax(
                text.rstrip(), "yaml", theme="ansi_dark", background_color="default", word_wrap=True
            )
        )
    return tree


def show_config(cfg: DictConfig, run_dir: str | Path) -> None:
    """Print the config tree and the run folder; write the tree, without colours, to
    ``<run>/config_tree.log``; a long value wraps on a terminal and is never cut."""
    tree = config_tree(cfg)
    console = Console()
    (console if console.is_terminal else Console(width=FULL_WIDTH)).print(tree)
    buffer = io.StringIO()
    Console(file=buffer, width=FULL_WIDTH, color_system=None).print(tree)
    Path(run_dir, "config_tree.log").write_text(buffer.getvalue())
    log.info("run folder: %s", run_dir)


def log_lightning_to_files() -> None:
    """Lightning's own messages (its loggers do not propagate to the root) also go to the run's log
    files, and only to this run's: a sweep's earlier jobs' files are taken off."""
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    for name in ("lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in logger.handlers[:]:
            if isinstance(handler, logging.FileHandler) and handler not in files:
                logger.removeHandler(handler)
        for handler in files:
            if handler not in logger.handlers:
                logger.addHandler(handler)


def ways_to_look(loggers: list, run_dir: str | Path) -> list[str]:
    """How to look at what the run's loggers wrote (metrics.json when none wrote anything)."""
    from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger

    ways = []
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            ways.append(f"tensorboard --logdir {run_dir}")
        elif isinstance(logger, CSVLogger):
            ways.append(str(Path(logger.log_dir, "metrics.csv")))
        elif isinstance(logger, MLFlowLogger):
            ways.append(f"mlflow ui --backend-store-uri {logger.experiment.tracking_uri}")
        elif isinstance(logger, WandbLogger):
            offline = sorted(Path(str(logger.save_dir), "wandb").glob("offline-run-*"))
            ways.append(f"wandb sync {offline[-1]}" if offline else str(logger.experiment.url))
    return ways or [str(Path(run_dir, "metrics.json"))]


def show_summary(
    run_dir: str | Path,
    metrics: dict,
    best: str,
    epochs: int,
    wall_time_s: float,
    loggers: list = (),
) -> None:
    """The end of a run in a few lines: where it is, its best checkpoint, its test numbers, and how
    to look at what it wrote."""
    rows = [("run folder", str(run_dir)), ("epochs", str(epochs))]
    if best:
        key = next((k for k in metrics if k.startswith("best/")), "best/val_loss")
        score = f"{key.split('/', 1)[1].replace('_', '/', 1)} {metrics.get(key, float('nan')):.2f}"
        rows.append(("best checkpoint", f"{Path(best).name}  ({score})"))
    tests = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("test/")}
    bits = tests.pop("bpd", None)
    if tests:
        rows.append(("test, nats/image", "  ".join(f"{k} {v:.2f}" for k, v in tests.items())))
    if bits is not None:  # a discrete likelihood: the unit papers on 8-bit images report
        rows.append(("test, bits/dim", f"{bits:.4f}"))
    rows.append(("wall time", f"{wall_time_s:.1f} s"))
    rows += [("look at it", way) for way in ways_to_look(list(loggers), run_dir)]
    width = max(len(name) for name, _ in rows)
    log.info("summary\n%s", "\n".join(f"  {name:<{width}}  {value}" for name, value in rows))
