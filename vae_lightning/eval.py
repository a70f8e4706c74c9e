"""Entry point: ``python -m vae_lightning.eval ckpt_path=... [eval.iw_samples=K] [eval.out=...]``.

Reports on the test set, in nats per image: the negative ELBO with its reconstruction and KL
terms, the importance-weighted estimate of -log p(x) (Burda et al., 2016), and the active units.
"""

import sys
import time
from pathlib import Path

import hydra
import lightning as L
import torch
from omegaconf import DictConfig

from vae_lightning import boundary
from vae_lightning.errors import SettingError, check_choice, check_int, exit_with, settings_of
from vae_lightning.files import output_file, write_json
from vae_lightning.models.likelihoods import bits_per_dim
from vae_lightning.models.metrics import (
    ACTIVE_UNIT_THRESHOLD,
    COMPILE_FROM,
    PRECISIONS,
    active_units,
    compiled_log_weights,
    iw_log_likelihood,
)
from vae_lightning.resolvers import auto_precision, register_resolvers
from vae_lightning.runs.checkpoints import (
    build_datamodule,
    load_model,
    pick_device,
    requested_overrides,
    run_folder,
)
from vae_lightning.runs.record import RUN_INFO

register_resolvers()
# when neither eval.iw_samples nor the run's config (e.g. experiment=iwae_paper_vae) sets k
DEFAULT_IW_SAMPLES = 1000


def dataset_name(data_config: dict) -> str:
    """'mnist', 'fashion_mnist'... or the DataModule's class name for datasets without a
    ``name``."""
    return data_config.get("name") or str(data_config.get("_target_", "?")).rsplit(".", 1)[-1]


def progress(total_batches: int, every_s: float = 10.0):
    """A function to call after each batch: every ``every_s`` seconds (and at the end) it says on
    stderr how many images are done, the time spent and about how much is left."""
    start, last = time.perf_counter(), [time.perf_counter()]

    def done(batches: int, images: int) -> None:
        now = time.perf_counter()
        if now - last[0] < every_s and batches < total_batches:
            return
        last[0], spent = now, now - start
        left = spent / batches * (total_batches - batches)
        print(
            f"  {images} images ({batches}/{total_batches} batches), {spent:.0f} s spent, "
            f"about {left:.0f} s left",
            file=sys.stderr,
            flush=True,
        )

    return done


def first_call_or_eager(compiled, eager):
    """``compiled`` for every call once its first call works; if that one raises (no C++ compiler,
    an operation inductor cannot build), one line says so and ``eager`` serves every call. An error
    of the model's own code raises again from ``eager``, with its traceback."""
    chosen = []

    def log_weights(per_image, n):
        if chosen:
            return chosen[0](per_image, n)
        try:
            out = compiled(per_image, n)
            chosen.append(compiled)
        except Exception as e:  # noqa: BLE001 - eager decides whether this is the model's error
            out = eager(per_image, n)
            chosen.append(eager)
            print(
                f"warning: eval.compile: torch.compile failed ({type(e).__name__}); estimating "
                "without it (eval.compile=false skips trying)",
                file=sys.stderr,
                flush=True,
            )
        return out

    return log_weights


@torch.no_grad()
def evaluate(
    model,
    batches,
    iw_samples: int,
    max_decodes: int,
    after_batch=None,
    precision="32-true",
    compiled: bool = False,
) -> dict:
    """Per-image means over ``batches`` of (x, y): ELBO terms (float32, whatever ``precision``),
    IW log-likelihood (its networks in ``precision``; ``compiled``: its pass under torch.compile),
    active units (per stochastic layer). ``after_batch(batches, images)`` is called after each
    batch (progress)."""
    sums = {"neg_elbo": 0.0, "recon": 0.0, "kl": 0.0, "iw_nll": 0.0}
    codes, n = {}, 0
    with model.estimating(precision):
        log_weights = None
        if compiled:
            log_weights = first_call_or_eager(compiled_log_weights(model), model.log_weights_from)
        for i, (x, _) in enumerate(batches, 1):
            x = x.to(model.device)
            with model.estimating("32-true"):  # the ELBO in float32, whatever the IW path's
                out = model.losses(x)
            b = len(x)
            sums["neg_elbo"] += out["loss"].item() * b
            sums["recon"] += out["recon"].item() * b
            sums["kl"] += out["kl"].item() * b
            iw = iw_log_likelihood(model, x, iw_samples, max_decodes, precision, log_weights)
            sums["iw_nll"] += -iw.sum().item()
            for layer, mu in model.codes(x).items():
                codes.setdefault(layer, []).append(mu.float().cpu())
            n += b
            if after_batch is not None:
                after_batch(i, n)
    layers = {layer: active_units(torch.cat(mus)) for layer, mus in codes.items()}
    result = {
        **{k: v / n for k, v in sums.items()},
        "n_images": n,
        "iw_samples": iw_samples,
        "active_units": sum(units for units, _ in layers.values()),
        "latent_dim": sum(len(variance) for _, variance in layers.values()),
        "unit_variance": [
            round(v, 6) for _, variance in layers.values() for v in variance.tolist()
        ],
    }
    if len(layers) > 1:
        result["layers"] = {
            layer: {"active_units": units, "latent_dim": len(variance)}
            for layer, (units, variance) in layers.items()
        }
    return result


def bits(result: dict, key: str) -> str:
    return f" = {result[key]:.4f} bits/dim" if key in result else ""


def table(result: dict) -> str:
    k = result["iw_samples"]
    rows = [
        ("checkpoint", result["checkpoint"]),
        (
            "data",
            (
                f"{result['data']} {result['split']} ({result['n_images']} images, "
                f"binarized={result['binarize']})"
            ),
        ),
        ("model", result["model"]),
        ("likelihood", result["likelihood"]),
        ("negative ELBO", f"{result['neg_elbo']:.2f} nats/image" + bits(result, "neg_elbo_bpd")),
        ("  reconstruction", f"{result['recon']:.2f}"),
        ("  KL", f"{result['kl']:.2f}"),
        (f"-log p(x), IW k={k}", f"{result['iw_nll']:.2f} nats/image" + bits(result, "iw_bpd")),
        (
            "  networks in",
            result.get("precision", "32-true") + (", compiled" if result.get("compiled") else ""),
        ),
        (
            "active units",
            (
                f"{result['active_units']} / {result['latent_dim']} "
                f"(Cov_x E_q[z] > {ACTIVE_UNIT_THRESHOLD})"
            ),
        ),
        *(
            (f"  {layer}", f"{v['active_units']} / {v['latent_dim']}")
            for layer, v in result.get("layers", {}).items()
        ),
        ("wall time", f"{result['wall_time_s']:.1f} s"),
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def run(cfg: DictConfig) -> dict:
    """Evaluate the checkpoint, write eval.json, return the result."""
    start = time.perf_counter()
    for key in ("iw_samples", "batch_size", "max_decodes"):
        if key != "iw_samples" or cfg.eval.get(key) is not None:
            check_int(
                f"eval.{key}",
                cfg.eval.get(key),
                low=1,
                example=1000 if key == "iw_samples" else 100,
            )
    check_choice("eval.split", cfg.eval.get("split"), ("test", "val"))
    device = pick_device(cfg.device)
    precision = check_choice("eval.precision", cfg.eval.get("precision"), ("auto", *PRECISIONS))
    if precision == "auto":  # as training's default: bf16 where this CPU computes it natively
        precision = auto_precision("cpu" if device.type == "cpu" else "gpu")
    compile_setting = cfg.eval.get("compile", "auto")
    if compile_setting not in ("auto", True, False):
        raise SettingError("eval.compile", compile_setting, "is not one of auto, true, false")
    ckpt_path = Path(str(cfg.ckpt_path)).expanduser()
    model, config = load_model(
        ckpt_path, map_location=str(device), overrides=requested_overrides(cfg)
    )
    iw_samples = cfg.eval.iw_samples or int(
        (config.get("eval") or {}).get("iw_samples", DEFAULT_IW_SAMPLES)
    )
    out = output_file(
        cfg.eval.out or run_folder(ckpt_path) / "eval.json",
        "eval.out",
        "eval.json",
        keep=("metrics.json", RUN_INFO),
    )
    L.seed_everything(cfg.seed, verbose=False)
    datamodule = build_datamodule(config, model)
    with settings_of("data"):
        datamodule.prepare_data()
    batches = datamodule.loader(cfg.eval.split, batch_size=cfg.eval.batch_size)
    decodes = len(batches) * cfg.eval.batch_size * iw_samples  # the images' IW decoder passes
    compiled = compile_setting is True or (compile_setting == "auto" and decodes >= COMPILE_FROM)
    print(
        f"evaluating {ckpt_path} on the {cfg.eval.split} set ({len(batches)} batches of "
        f"{cfg.eval.batch_size}): the negative ELBO, -log p(x) by importance weighting with "
        f"k={iw_samples} (k decoder passes per image, its networks in {precision}"
        f"{', compiled' if compiled else ''}) and the active units, on {device}",
        file=sys.stderr,
        flush=True,
    )
    result = evaluate(
        model,
        batches,
        iw_samples,
        cfg.eval.max_decodes,
        after_batch=progress(len(batches)),
        precision=precision,
        compiled=compiled,
    )
    data = config["data"]
    result.update(
        checkpoint=str(ckpt_path.resolve()),
        split=cfg.eval.split,
        data=dataset_name(data),
        binarize=bool(data.get("binarize", False)),
        model=type(model).__name__,
        likelihood=type(model.likelihood).__name__,
        precision=precision,
        compiled=compiled,
        wall_time_s=time.perf_counter() - start,
    )
    if model.likelihood.discrete:  # bits per dimension, as papers on 8-bit images report
        shape = model.input_shape
        result.update(
            neg_elbo_bpd=bits_per_dim(result["neg_elbo"], shape),
            iw_bpd=bits_per_dim(result["iw_nll"], shape),
        )
    write_json(out, result)
    print(table(result))
    print(f"wrote {out}")
    return result


@hydra.main(version_base="1.3", config_path=str(boundary.CONF_DIR), config_name="eval")
def hydra_main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except Exception as e:
        exit_with(boundary.report(e))


def main() -> None:
    boundary.run(hydra_main, "eval")


if __name__ == "__main__":
    main()
