"""Seconds for the importance-weighted estimate of a checkpoint's first test images, per precision
and chunk size: the same draws for each (seed 0), so the estimates differ by arithmetic alone.

    python benchmarks/iw_speed.py <run>/checkpoints/last.ckpt [--images 1000] [--k 5000]
        [--batch-size 100] [--paths 32-true:2500,bf16-mixed:2500,bf16-mixed:2500:compiled]

Each path is precision:max_decodes[:compiled] (eval.precision, eval.max_decodes, eval.compile=true;
a compiled path's compile is timed apart). Run it alone on the machine: two torch processes at
once on a small CPU each run many times slower.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vae_lightning.models.metrics import compiled_log_weights, iw_log_likelihood  # noqa: E402
from vae_lightning.runs.checkpoints import build_datamodule, load_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument(
        "--batch-size", type=int, default=100, help="images per batch (eval.batch_size)"
    )
    parser.add_argument("--paths", default="32-true:2500,bf16-mixed:2500,bf16-mixed:2500:compiled")
    args = parser.parse_args()
    model, config = load_model(Path(args.ckpt), map_location="cpu")
    datamodule = build_datamodule(config, model)
    datamodule.prepare_data()
    batches, n = [], 0
    for x, _ in datamodule.loader("test", batch_size=args.batch_size):
        batches.append(x[: args.images - n])
        n += len(batches[-1])
        if n >= args.images:
            break
    print(
        f"{n} test images in batches of {args.batch_size}, k={args.k}, "
        f"{torch.get_num_threads()} threads"
    )
    for path in args.paths.split(","):
        precision, max_decodes, *compiled = path.split(":")
        torch.manual_seed(0)
        start, total = time.perf_counter(), 0.0
        with model.estimating(precision):
            log_weights, note = None, ""
            if compiled:  # the compile, timed apart: one chunk of the first batch
                log_weights = compiled_log_weights(model)
                iw_log_likelihood(model, batches[0], 1, int(max_decodes), precision, log_weights)
                note = f" (+ {time.perf_counter() - start:.1f} s compile)"
                torch.manual_seed(0)
                start = time.perf_counter()
            for x in batches:
                iw = iw_log_likelihood(model, x, args.k, int(max_decodes), precision, log_weights)
                total += iw.sum().item()
        seconds = time.perf_counter() - start
        print(
            f"{precision:>10} max_decodes={max_decodes:>6}{' compiled' if compiled else '':9}: "
            f"{seconds:7.1f} s, "
            f"{seconds * 10_000 / n / 60:5.2f} min per 10 000 images, -log p(x) {-total / n:.4f}"
            + note
        )


if __name__ == "__main__":
    main()
