"""Training speed, side by side, in one process: the tutorial's loop, a careful plain loop,
vae_lightning.

    python benchmarks/bench_train.py [--data ../shared/data] [--epochs 5] [--quick]
        [--rows a,b,...] [--repeat N] [--device cuda]

Every configuration trains the same 784-512-256-20 VAE (BCE, Adam 1e-3) on Fashion-MNIST (60k
images, MNIST format) for a warm-up epoch plus timed epochs; the table reports the median seconds
per timed epoch, samples/s, the ratio to the tutorial's loop, the peak memory above the process
baseline, and the validation loss after the last epoch (nats per image). Results also go to
benchmarks/results/bench.json.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vae_lightning.callbacks.threads import CpuThreads, flush_denormals  # noqa: E402
from vae_lightning.data.in_memory import normalize  # noqa: E402
from vae_lightning.data.mnist import MNISTDataModule  # noqa: E402
from vae_lightning.models import VAE  # noqa: E402
from vae_lightning.resolvers import register_resolvers  # noqa: E402
from vae_lightning.runs.build import build_run  # noqa: E402

SEED = 42
NAME_WIDTH = 74  # the longest label with " [run N]"


class PeakMemory:
    """Peak resident memory (CPU) or allocated memory (CUDA) above the level at start, in MiB."""

    def __init__(self, device: torch.device):
        self.device, self.peak, self._stop = device, 0, threading.Event()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _watch(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.rss())

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = self.peak = self.rss()
            self._thread = threading.Thread(target=self._watch, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
        self.mib = (self.peak - self.base) / 2**20


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def fresh_module(**model_kw) -> VAE:
    L.seed_everything(SEED, verbose=False)
    return VAE(latent_dim=20, loss="bce", **model_kw)  # the default network: the tutorial MLP


@torch.no_grad()
def val_loss(module: VAE, images: torch.Tensor, device) -> float:
    total = 0.0
    for i in range(0, len(images), 1000):
        x = normalize(images[i : i + 1000].to(device))
        total += module.losses(x)["loss"].item() * len(x)
    return total / len(images)


def tutorial_loop(args, device, batch_size=64):
    """(a) The tutorial: per-sample ToTensor, DataLoader(shuffle=True), loss.item() every step."""
    ds = datasets.FashionMNIST(
        args.data, train=True, download=False, transform=transforms.ToTensor()
    )
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True)
    module = fresh_module().to(device)
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    times = []
    for _ in range(args.epochs):
        sync(device)
        start, train_loss = time.perf_counter(), 0.0
        for x, _ in loader:
            x = x.to(device)
            opt.zero_grad()
            logits, mu, logvar = module.net(x)
            bce = torch.nn.functional.binary_cross_entropy(
                torch.sigmoid(logits).flatten(1), x.flatten(1), reduction="sum"
            )
            kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
            loss = bce + kld
            loss.backward()
            train_loss += loss.item()
            opt.step()
        sync(device)
        times.append(time.perf_counter() - start)
    return times, None, len(ds)


def plain_loop(
    args,
    device,
    batch_size,
    dm: MNISTDataModule,
    autocast: torch.dtype | None = None,
    validate: bool = False,
):
    """(b) A careful plain loop: uint8 tensor in memory, batches by indexing, no host sync per step
    (``autocast``: the forward pass under torch.autocast with that dtype; ``validate``: the
    validation loss in batches of 1000 at each epoch's end, inside the timed epoch, as Lightning
    validates)."""
    images = dm.split("train")[0].to(device)
    val_images = dm.split("val")[0].to(device)
    module = fresh_module().to(device)
    opt = torch.optim.Adam(module.parameters(), lr=1e-3, fused=True)  # as conf/optimizer/adam.yaml
    times = []
    for epoch in range(args.epochs):
        order = torch.randperm(
            len(images), generator=torch.Generator().manual_seed(dm.seed + epoch)
        ).to(device)
        sync(device)
        start = time.perf_counter()
        for idx in order.split(batch_size):
            x = normalize(images[idx])
            with torch.autocast(
                device.type, dtype=autocast or torch.float32, enabled=autocast is not None
            ):
                loss = module.losses(x)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if validate:
            module.eval()
            with torch.autocast(
                device.type, dtype=autocast or torch.float32, enabled=autocast is not None
            ):
                val_loss(module, val_images, device)
            module.train()
        sync(device)
        times.append(time.perf_counter() - start)
    return times, val_loss(module, val_images, device), len(images)


def lightning_floor(args, device, dm: MNISTDataModule, batch_size=64):
    """(b') The plain bf16 loop's work inside Lightning's Trainer and nothing else: a bare
    LightningModule whose training step is the VAE's loss, the template's batches (batch 64 for
    training, 1000 for validation, every epoch), bf16-mixed, fused Adam; no logger, checkpoint,
    progress bar, metric or callback beyond the thread setting (which keeps torch's Adam from
    loading NVML at every step). What any template built on Lightning's training loop pays at
    least."""

    class Bare(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.vae = fresh_module()

        def training_step(self, batch, batch_idx):
            return self.vae.losses(batch[0])["loss"]

        def validation_step(self, batch, batch_idx):
            self.vae.losses(batch[0])

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3, fused=True)

    module, timer = Bare(), EpochTimer()
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision="bf16-mixed",
        max_epochs=args.epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[CpuThreads(), timer],
    )
    trainer.fit(module, datamodule=dm)
    return timer.times, val_loss(module.vae, dm.split("val")[0], device), len(dm.split("train")[0])


def pythae_loop(args, device, dm: MNISTDataModule):
    """(e) pythae (PyPI ``pythae``, an optional bench dependency: ``pip install pythae``), the
    library researchers would otherwise pick: its ``VAE`` (BCE) trained by its ``BaseTrainer``
    with the same 784-512-256-20 MLP (the layers of the default network), batch 64, Adam 1e-3,
    its evaluation on the validation images every epoch (as the default command validates), fp32
    (its ``amp`` is CUDA only). An epoch is what its trainer runs between ``on_epoch_begin`` and
    ``on_epoch_end``: the training pass, the evaluation and its copy of the best model."""
    from pythae.data.datasets import BaseDataset
    from pythae.models import VAE as PythaeVAE
    from pythae.models import VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from pythae.trainers import BaseTrainer, BaseTrainerConfig
    from pythae.trainers.training_callbacks import TrainingCallback

    net = fresh_module().net  # the default network's layers and init, seeded as every row

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            mu, logvar = self.net.encode(x)
            return ModelOutput(embedding=mu, log_covariance=logvar)

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net.decode(z)))

    class Timer(TrainingCallback):
        def __init__(self):
            self.times = []

        def on_epoch_begin(self, training_config, **kwargs):
            self._start = time.perf_counter()

        def on_epoch_end(self, training_config, **kwargs):
            sync(device)
            self.times.append(time.perf_counter() - self._start)

    config = VAEConfig(input_dim=(1, 28, 28), latent_dim=20, reconstruction_loss="bce")
    model = PythaeVAE(config, encoder=Encoder(), decoder=Decoder())
    train, val = dm.split("train")[0], dm.split("val")[0]
    timer = Timer()
    with tempfile.TemporaryDirectory(prefix="bench_pythae_") as out:
        trainer = BaseTrainer(
            model,
            train_dataset=BaseDataset(normalize(train), torch.zeros(len(train))),
            eval_dataset=BaseDataset(normalize(val), torch.zeros(len(val))),
            training_config=BaseTrainerConfig(
                output_dir=out,
                num_epochs=args.epochs,
                per_device_train_batch_size=64,
                per_device_eval_batch_size=64,
                learning_rate=1e-3,
                optimizer_cls="Adam",
                no_cuda=device.type != "cuda",
                seed=SEED,
            ),
            callbacks=[timer],
        )
        trainer.train()
    # the same validation -ELBO as every other row: the model's network in this project's VAE
    module = fresh_module().to(device)
    module.net.load_state_dict(net.state_dict())
    return timer.times, val_loss(module.eval(), val, device), len(train)


class EpochTimer(L.Callback):
    """Wall time of each training epoch, validation included (it runs before on_train_epoch_end)."""

    def __init__(self):
        self.times = []

    def on_train_epoch_start(self, trainer, pl_module):
        sync(pl_module.device)
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        sync(pl_module.device)
        self.times.append(time.perf_counter() - self._start)


def lightning_run(args, device, batch_size, validate, *overrides, default_command=False):
    """(c) vae_lightning through the entry point's build_run(): Trainer, DataModule, logging,
    checkpoints.

    ``default_command``: (d), everything the default ``python -m vae_lightning.train`` has on: the
    progress bar, the model summary, every callback and the logger; only the test pass after
    training is left out.
    """
    with tempfile.TemporaryDirectory(prefix="bench_") as out:
        return _lightning_run(
            args, device, batch_size, validate, out, *overrides, default_command=default_command
        )


def _lightning_run(args, device, batch_size, validate, out, *overrides, default_command=False):
    quiet = (
        []
        if default_command
        else ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
    )
    if not default_command and not any(o.startswith("trainer.precision=") for o in overrides):
        quiet.append("trainer.precision=32-true")  # (c) rows are fp32 unless they say otherwise
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "data=fashion_mnist",
                f"data.root={args.data}",
                f"data.batch_size={batch_size}",
                f"trainer.max_epochs={args.epochs}",
                f"paths.output_dir={out}",
                f"seed={SEED}",
                f"trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}",
                *quiet,
                "test=false",
                *(
                    []
                    if validate
                    else ["trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0"]
                ),
                *overrides,
            ],
        )
    L.seed_everything(SEED, verbose=False)
    run = build_run(cfg)
    datamodule, model, trainer = run.datamodule, run.model, run.trainer
    timer = EpochTimer()
    trainer.callbacks.append(timer)
    trainer.fit(model, datamodule=datamodule)
    return (
        timer.times,
        val_loss(model.to(device), datamodule.split("val")[0], device),
        len(datamodule.split("train")[0]),
    )


def measure(name, fn, device, results, baseline=None):
    with PeakMemory(device) as mem:
        times, vloss, n = fn()
    timed = times[1:]  # the first epoch is the warm-up
    sec = statistics.median(timed)
    row = {
        "name": name,
        "sec_per_epoch": sec,
        "samples_per_s": n / sec,
        "peak_mem_mib": mem.mib,
        "val_loss": vloss,
        "epoch_times": times,
    }
    if baseline:
        row["ratio_to_a"] = sec / baseline
    results.append(row)
    ratio = f"{row.get('ratio_to_a', 1.0):6.3f}"
    vl = f"{vloss:9.3f}" if vloss is not None else "        -"
    print(
        f"| {name:<{NAME_WIDTH}} | {sec:8.2f} | {n / sec:9.0f} | {ratio} | {mem.mib:8.0f} | {vl} |",
        flush=True,
    )
    return row


QUICK = (
    "tutorial",
    "plain",
    "plain_bf16_val",
    "lightning_floor",
    "lightning_val_off",
    "lightning_val_on",
    "default_command",
    "default_command_fp32",
    "pythae",
)


# (printed as, numerator row, denominator row): the overheads the README reports
RATIOS = (
    # the default command's overhead over a careful loop of its precision that also validates
    (
        "default command / plain bf16 loop that validates every epoch",
        "default_command",
        "plain_bf16_val",
    ),
    # how much of it is Lightning's own loop, and how much the template's
    (
        "Lightning's bare loop / plain bf16 loop that validates every epoch",
        "lightning_floor",
        "plain_bf16_val",
    ),
    ("default command / Lightning's bare loop", "default_command", "lightning_floor"),
    ("default command / pythae's trainer (epoch time)", "default_command", "pythae"),
)


def bench_rows(args, device, dm) -> dict:
    """{key: (label, run)} of every configuration ``--rows`` can pick, in the table's order."""
    rows = {
        "tutorial": ("(a) tutorial loop, bs 64", lambda: tutorial_loop(args, device)),
        "plain": (
            "(b) plain loop, in-memory uint8, bs 64",
            lambda: plain_loop(args, device, 64, dm),
        ),
        "plain_bf16": (
            "(b) plain loop, bs 64, autocast bf16",
            lambda: plain_loop(args, device, 64, dm, torch.bfloat16),
        ),
        "plain_bf16_val": (
            "(b) plain loop, bs 64, autocast bf16, validates every epoch",
            lambda: plain_loop(args, device, 64, dm, torch.bfloat16, validate=True),
        ),
        "lightning_floor": (
            "(b') the same in Lightning's Trainer, nothing else (bare module)",
            lambda: lightning_floor(args, device, dm),
        ),
        "lightning_val_off": (
            "(c) vae_lightning, bs 64, val off",
            lambda: lightning_run(args, device, 64, False),
        ),
        "lightning_val_on": (
            "(c) vae_lightning, bs 64, val on",
            lambda: lightning_run(args, device, 64, True),
        ),
        "default_command": (
            "(d) default command (bar, callbacks, logger, checkpoints), bs 64",
            lambda: lightning_run(args, device, 64, True, default_command=True),
        ),
        "default_command_fp32": (
            "(d) default command, trainer.precision=32-true",
            lambda: lightning_run(
                args, device, 64, True, "trainer.precision=32-true", default_command=True
            ),
        ),
        "pythae": (
            "(e) pythae 0.1 VAE + BaseTrainer, bs 64, eval every epoch, fp32",
            lambda: pythae_loop(args, device, dm),
        ),
        "default_command_bf16": (
            "(d) default command, trainer.precision=bf16-mixed",
            lambda: lightning_run(
                args, device, 64, True, "trainer.precision=bf16-mixed", default_command=True
            ),
        ),
    }
    options = {
        "bf16": ("bf16-mixed", ["trainer.precision=bf16-mixed"]),
        "adam_loop": ("Adam for-loop (torch's CPU default)", ["optimizer.fused=null"]),
        "adam_foreach": ("Adam foreach", ["optimizer.fused=null", "optimizer.foreach=true"]),
        "compile": ("compile", ["model.compile=true"]),
    }
    if device.type == "cuda":
        options |= {
            "host_data": ("data on the host (data.on_device=false)", ["data.on_device=false"]),
            "compile_reduce_overhead": (
                "compile, reduce-overhead (CUDA graphs)",
                ["model.compile=true", "model.compile_mode=reduce-overhead"],
            ),
        }
    for key, (label, overrides) in options.items():
        rows[key] = (
            f"(c) vae_lightning, bs 64, val on, {label}",
            lambda o=overrides: lightning_run(args, device, 64, True, *o),
        )
    for bs in (256, 1024):
        rows[f"plain_bs{bs}"] = (
            f"(b) plain loop, bs {bs}",
            lambda b=bs: plain_loop(args, device, b, dm),
        )
        rows[f"lightning_bs{bs}"] = (
            f"(c) vae_lightning, bs {bs}, val on",
            lambda b=bs: lightning_run(args, device, b, True),
        )
    return rows


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--data", default=os.environ.get("DATA_DIR") or str(REPO.parent / "shared" / "data")
    )
    p.add_argument(
        "--epochs", type=int, default=5, help="epochs per configuration (first = warm-up)"
    )
    p.add_argument("--quick", action="store_true", help="3 epochs, fewer configurations")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bench.json"))
    p.add_argument(
        "--rows", default="", help="comma-separated row keys (default: all; (a) always runs first)"
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the chosen rows this many times in turn; ratios: the median over the runs",
    )
    args = p.parse_args()
    if args.repeat < 1:
        p.error(f"--repeat {args.repeat}: must be 1 or more")
    # every row, as the training entry point does: denormal floats count as 0 (set before any
    # torch work, since the worker threads copy the setting when they start)
    flush_denormals()
    if args.quick:
        args.epochs = 3
    register_resolvers()
    device = torch.device(args.device)
    dm = MNISTDataModule(name="fashion_mnist", root=args.data, download=False)
    cpu = (
        open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(" \t:")
        if device.type == "cpu"
        else ""
    )
    machine = (
        torch.cuda.get_device_name()
        if device.type == "cuda"
        else f"{cpu}, {torch.get_num_threads()} threads"
    )
    print(
        f"# {machine}; torch {torch.__version__}; {args.epochs} epochs per row, "
        f"median of epochs 2..{args.epochs}\n"
    )
    print(
        f"| {'configuration':<{NAME_WIDTH}} | s/epoch  | samples/s | vs (a) | peak MiB "
        "| val loss  |"
    )
    print(f"|{'-' * (NAME_WIDTH + 2)}|----------|-----------|--------|----------|-----------|")
    rows = bench_rows(args, device, dm)
    chosen = (
        args.rows.split(",")
        if args.rows
        else [k for k in rows if not (args.quick and k not in QUICK)]
    )
    unknown = [k for k in chosen if k not in rows]
    if unknown:
        p.error(f"--rows: unknown {', '.join(unknown)}; known: {', '.join(rows)}")
    results, a = [], None
    # (a) first: the others are ratios to it; with --repeat the chosen rows run again in turn
    for rep in range(args.repeat):
        keys = [k for k in chosen if k != "tutorial"]
        for key in ["tutorial", *keys] if rep == 0 else keys:
            label, fn = rows[key]
            if args.repeat > 1:
                label = f"{label} [run {rep + 1}]"
            try:
                row = measure(label, fn, device, results, a)
            except ModuleNotFoundError as e:  # an optional bench dependency
                skipped = f"skipped: {e.name} is not installed (pip install {e.name})"
                print(f"| {label:<{NAME_WIDTH}} | {skipped}")
                continue
            row["key"], row["repeat"] = key, rep
            a = a or row["sec_per_epoch"]
    print()
    for what, num, den in RATIOS:
        pairs = [
            by_key[num] / by_key[den]
            for by_key in (
                {r["key"]: r["sec_per_epoch"] for r in results if r["repeat"] == rep}
                for rep in range(args.repeat)
            )
            if num in by_key and den in by_key
        ]
        if pairs:
            spread = (
                f" (median of {len(pairs)} runs in turn, {min(pairs):.3f}-{max(pairs):.3f})"
                if len(pairs) > 1
                else ""
            )
            print(f"{what}{spread}: {statistics.median(pairs):.3f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "machine": machine,
                "torch": torch.__version__,
                "epochs": args.epochs,
                "rows": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
