"""Seconds for the importance-weighted estimate of a checkpoint's first test images, per precision
and chunk size: the same draws for each (seed 0), so the estimates differ by arithmetic alone.

    python benchmarks/iw_speed.py <run>/checkpoints/last.ckpt [--images 1000] [--k 5000]
        [--paths 32-true:10000,32-true:2500,bf16-mixed:2500]

Each path is precision:max_decodes (eval.precision, eval.max_decodes). Run it alone on the machine:
two torch processes at once on a small CPU each run many times slower.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vae_lightning.models.metrics import iw_log_likelihood  # noqa: E402
from vae_lightning.runs.checkpoints import build_datamodule, load_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--paths", default="32-true:10000,32-true:2500,bf16-mixed:2500")
    args = parser.parse_args()
    model, config = load_model(Path(args.ckpt), map_location="cpu")
    datamodule = build_datamodule(config, model)
    datamodule.prepare_data()
    batches, n = [], 0
    for x, _ in datamodule.loader("test", batch_size=100):
        batches.append(x[: args.images - n])
        n += len(batches[-1])
        if n >= args.images:
            break
    print(f"{n} test images, k={args.k}, {torch.get_num_threads()} threads")
    for path in args.paths.split(","):
        precision, max_decodes = path.split(":")
        torch.manual_seed(0)
        start, total = time.perf_counter(), 0.0
        for x in batches:
            iw = iw_log_likelihood(model, x, args.k, int(max_decodes), precision)
            total += iw.sum().item()
        seconds = time.perf_counter() - start
        print(
            f"{precision:>10} max_decodes={max_decodes:>6}: {seconds:7.1f} s, "
            f"{seconds * 10_000 / n / 60:5.2f} min per 10 000 images, -log p(x) {-total / n:.4f}"
        )


if __name__ == "__main__":
    main()
