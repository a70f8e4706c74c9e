"""Where the default command's time above a careful plain loop goes: the default command of
``make bench`` (row (d)) with one part of it switched off at a time (cumulatively), then all of
them, beside the plain bf16 loop that validates every epoch and Lightning's bare loop (row (b'));
one process, one configuration after another.

    python benchmarks/overhead_profile.py [--data ../shared/data] [--epochs 4] [--cprofile 30]

Prints seconds per epoch (median of epochs 2..N) for each configuration and what switching the
part off saves against the default command. A part that saves nothing is noise (±0.1 s here).
"""

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_train as bench  # noqa: E402

PARTS = {  # one part of the default command each, as overrides that switch it off
    "progress bar": ["trainer.enable_progress_bar=false"],
    "layer table": ["trainer.enable_model_summary=false"],
    "sample grid + reconstructions": ["~callbacks.sample_grid", "~callbacks.reconstructions"],
    "latent activity": ["~callbacks.latent_activity"],
    "checkpoints": ["~callbacks.model_checkpoint", "~callbacks.interrupt_checkpoint"],
    "divergence guard": ["~callbacks.divergence_guard"],
    "HParams table + latent embedding": ["~callbacks.hparams", "~callbacks.latent_embedding"],
    "TensorBoard logger (csv instead)": ["logger=csv"],
}


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", default=str(bench.REPO.parent / "shared" / "data"))
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument(
        "--cprofile",
        type=int,
        default=0,
        metavar="N",
        help="instead: the default command under cProfile, its N most expensive calls by own time",
    )
    args = p.parse_args()
    bench.flush_denormals()
    bench.register_resolvers()
    device = torch.device("cpu")
    dm = bench.MNISTDataModule(name="fashion_mnist", root=args.data, download=False)

    if args.cprofile:
        import cProfile
        import pstats

        profile = cProfile.Profile()
        profile.runcall(bench.lightning_run, args, device, 64, True, default_command=True)
        pstats.Stats(profile).sort_stats("tottime").print_stats(args.cprofile)
        return

    def median(times):
        return statistics.median(times[1:])

    plain = median(bench.plain_loop(args, device, 64, dm, torch.bfloat16, validate=True)[0])
    print(f"| plain bf16 loop that validates every epoch | {plain:6.2f} | |", flush=True)
    floor = median(bench.lightning_floor(args, device, dm)[0])
    print(f"| Lightning's bare loop (row (b')) | {floor:6.2f} | ratio {floor / plain:.3f} |")
    default = median(bench.lightning_run(args, device, 64, True, default_command=True)[0])
    print(f"| default command | {default:6.2f} | ratio {default / plain:.3f} |", flush=True)
    every = []
    for part, overrides in PARTS.items():
        every += overrides
        sec = median(
            bench.lightning_run(args, device, 64, True, *overrides, default_command=True)[0]
        )
        print(f"| without the {part} | {sec:6.2f} | saves {default - sec:+.2f} |", flush=True)
    sec = median(bench.lightning_run(args, device, 64, True, *every, default_command=True)[0])
    print(
        f"| without all of them | {sec:6.2f} | ratio {sec / plain:.3f}, "
        f"{sec / floor:.3f} of the bare loop |",
        flush=True,
    )


if __name__ == "__main__":
    main()
