"""Where one training step's time goes (the bound on any loop's epoch time),
at the tutorial's settings.

    python benchmarks/step_profile.py [--batch-size 64] [--steps 300]

Prints milliseconds per step for: cutting + normalizing a batch from the in-memory uint8 tensor, the
forward + backward pass (with the GFLOP/s it reaches) in fp32, under torch.autocast(bfloat16) and
with bf16 weights, and Adam's update in its three implementations (and fused on bf16 weights); then
the epoch time a loop with zero overhead would take (steps per epoch x the sum): the floor for fp32,
and for bf16.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vae_lightning.data.in_memory import normalize  # noqa: E402
from vae_lightning.models import VAE  # noqa: E402


def per_step_ms(fn, steps: int) -> float:
    for _ in range(20):
        fn()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps * 1e3


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--train-size", type=int, default=55_000)
    args = p.parse_args()
    torch.manual_seed(0)
    module = VAE()
    params = sum(p.numel() for p in module.parameters())
    images = torch.randint(0, 256, (args.train_size, 1, 28, 28), dtype=torch.uint8)
    idx = torch.randperm(args.train_size)[: args.batch_size]
    x = normalize(images[idx])

    def forward_backward():
        module.zero_grad(set_to_none=False)
        module.losses(x)["loss"].backward()

    def autocast_forward_backward():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = module.losses(x)["loss"]
        module.zero_grad(set_to_none=False)
        loss.backward()

    bf16 = VAE().to(torch.bfloat16)
    x16 = x.to(torch.bfloat16)

    def bf16_forward_backward():
        bf16.zero_grad(set_to_none=False)
        bf16.losses(x16)["loss"].backward()

    rows = {
        "batch: index uint8 + normalize": per_step_ms(lambda: normalize(images[idx]), args.steps)
    }
    rows["forward + backward"] = fb = per_step_ms(forward_backward, args.steps)
    rows["forward + backward, autocast bf16"] = per_step_ms(autocast_forward_backward, args.steps)
    rows["forward + backward, bf16 weights"] = fb16 = per_step_ms(bf16_forward_backward, args.steps)
    forward_backward()
    for name, kw in (
        ("for-loop", {"foreach": False}),
        ("foreach", {"foreach": True}),
        ("fused", {"fused": True}),
    ):
        opt = torch.optim.Adam(module.parameters(), lr=1e-9, **kw)
        rows[f"Adam step ({name})"] = per_step_ms(opt.step, args.steps)
    bf16_forward_backward()
    bf16_adam = torch.optim.Adam(bf16.parameters(), lr=1e-9, fused=True)
    rows["Adam step (fused, bf16 weights)"] = per_step_ms(bf16_adam.step, args.steps)
    # multiply-adds of forward (2) + backward (4) per weight per sample
    flops = 6 * params * args.batch_size
    steps_per_epoch = -(-args.train_size // args.batch_size)
    print(
        f"# {params:,} parameters, batch {args.batch_size}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}"
    )
    for name, ms in rows.items():
        extra = (
            f"   ({flops / ms / 1e6:.0f} GFLOP/s)" if name.startswith("forward + backward") else ""
        )
        print(f"{name:<34} {ms:7.3f} ms/step{extra}")
    floor = (
        steps_per_epoch
        * (rows["batch: index uint8 + normalize"] + fb + rows["Adam step (fused)"])
        / 1e3
    )
    print(f"zero-overhead epoch ({steps_per_epoch} steps, fused Adam): {floor:.2f} s")
    floor16 = (
        steps_per_epoch
        * (rows["batch: index uint8 + normalize"] + fb16 + rows["Adam step (fused, bf16 weights)"])
        / 1e3
    )
    print(f"zero-overhead epoch, bf16 weights (the bf16 floor): {floor16:.2f} s")


if __name__ == "__main__":
    main()
