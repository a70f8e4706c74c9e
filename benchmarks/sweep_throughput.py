"""Sweep throughput on one machine: the same 8-run grid run one after another, and two at a time
with joblib.

    python benchmarks/sweep_throughput.py [--data ../shared/data] [--batches 300]

Each run trains one epoch (``--batches`` steps at batch 64) of Fashion-MNIST, no test pass. The
rows: the basic launcher (sequential); ``hydra/launcher=joblib hydra.launcher.n_jobs=2`` with the
default ``threads=null`` (each job takes its share of the cores); the same with
``threads=<all cores>`` (what every process did before: they fight over the cores). Prints wall
time and runs per hour of each, and their ratio to the sequential row.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GRID = ["model.latent_dim=2,5,10,20", "optimizer.lr=1e-3,5e-4"]  # 8 runs


def sweep(args, *extra: str) -> float:
    with tempfile.TemporaryDirectory(prefix="sweep_") as out:
        cmd = [
            sys.executable,
            "-m",
            "vae_lightning.train",
            "-m",
            *GRID,
            "data=fashion_mnist",
            f"data.root={args.data}",
            "trainer.max_epochs=1",
            f"trainer.limit_train_batches={args.batches}",
            "test=false",
            "trainer.enable_progress_bar=false",
            "print_config=false",
            f"hydra.sweep.dir={out}",
            *extra,
        ]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if proc.returncode:
            sys.exit(f"error: the sweep failed: {proc.stderr.strip().splitlines()[-1]}")
        return seconds


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--data", default=os.environ.get("DATA_DIR") or str(REPO.parent / "shared" / "data")
    )
    p.add_argument("--batches", type=int, default=300, help="training steps per run")
    args = p.parse_args()
    cores = os.cpu_count()
    rows = {
        "sequential (basic launcher)": [],
        "joblib, 2 jobs, threads=null (cores shared)": [
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
        ],
        f"joblib, 2 jobs, threads={cores} (each takes every core)": [
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            f"threads={cores}",
        ],
    }
    print(f"# {cores} cores; 8 runs of {args.batches} steps at batch 64 each\n")
    print(f"| {'launcher':<50} | wall s | runs/hour | vs sequential |")
    print(f"|{'-' * 52}|--------|-----------|---------------|")
    base = None
    for name, extra in rows.items():
        seconds = sweep(args, *extra)
        base = base or seconds
        print(
            f"| {name:<50} | {seconds:6.1f} | {8 * 3600 / seconds:9.0f} "
            f"| {base / seconds:12.2f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
