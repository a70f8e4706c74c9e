"""Entry point: ``python -m vae_lightning.sample ckpt_path=... [mode=prior] [n=256]
[out=<run>/sample_prior.png]``.

Modes (each a grid of n images, nrow per row):
  prior        decoded z ~ p(z), the model's prior
  interpolate  each row a straight line in latent space between the codes mu(x) of two test images
  manifold     latent_dim=2 only: z on a grid of N(0, 1) quantiles 0.05..0.95 (Kingma & Welling's
               figure)
  traverse     one row per latent dim (most active first): that dim swept over mu +- span around a
               test code
"""

import math
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from torch.distributions import Normal
from torchvision.utils import save_image

from vae_lightning import boundary
from vae_lightning.errors import (
    SettingError,
    UserError,
    check_choice,
    check_float,
    check_int,
    exit_with,
    settings_of,
)
from vae_lightning.files import output_file
from vae_lightning.resolvers import register_resolvers
from vae_lightning.runs.checkpoints import (
    build_datamodule,
    load_model,
    pick_device,
    requested_overrides,
    run_folder,
)

register_resolvers()


def codes_of_test_images(
    model, config: dict, count: int, generator: torch.Generator
) -> torch.Tensor:
    """Posterior means mu(x) (the top layer's) of ``count`` random test images, shape (count, D)."""
    datamodule = build_datamodule(config, model)
    with settings_of("data"):
        datamodule.prepare_data()
    x, _ = datamodule.examples(
        "test", count, seed=int(torch.randint(2**31 - 1, (1,), generator=generator))
    )
    return model.encode(x)


def prior(model, n: int, nrow: int, generator: torch.Generator, **_) -> torch.Tensor:
    return model.sample_prior(n, generator=generator)


def manifold(model, n: int, nrow: int, **_) -> torch.Tensor:
    """Rows go down in z2 (top = high), columns go right in z1, both through N(0,1) quantiles."""
    if model.latent_dim != 2:
        raise UserError(
            "mode=manifold needs a 2-D latent space but the checkpoint has "
            f"model.latent_dim={model.latent_dim}: "
            "train one with experiment=latent2, or use mode=traverse"
        )
    rows = -(-n // nrow)
    q = Normal(0.0, 1.0)
    z1 = q.icdf(torch.linspace(0.05, 0.95, nrow))
    z2 = q.icdf(torch.linspace(0.95, 0.05, rows))
    grid = torch.stack([z1.repeat(rows), z2.repeat_interleave(nrow)], dim=1)
    return grid[:n]


def interpolate(
    model, n: int, nrow: int, generator: torch.Generator, config: dict, **_
) -> torch.Tensor:
    rows = -(-n // nrow)
    codes = codes_of_test_images(model, config, 2 * rows, generator).cpu()
    start, end = codes[0::2], codes[1::2]
    t = torch.linspace(0, 1, nrow).view(1, nrow, 1)
    return (start[:, None] + t * (end - start)[:, None]).reshape(-1, codes.shape[1])[:n]


def traverse(
    model, n: int, nrow: int, generator: torch.Generator, config: dict, span: float, **_
) -> torch.Tensor:
    """Dims ordered by the spread of mu over 256 test images, so active units come first."""
    codes = codes_of_test_images(model, config, 256, generator).cpu()
    rows = min(-(-n // nrow), model.latent_dim)
    dims = codes.var(0).argsort(descending=True)[:rows]
    z = codes[0].repeat(rows, nrow, 1)  # (rows, nrow, D) around the first test code
    for r, d in enumerate(dims):
        z[r, :, d] = codes[0, d] + torch.linspace(-span, span, nrow)
    return z.reshape(-1, codes.shape[1])[:n]


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MAX_IMAGES = 65_536  # a 256 x 256 grid

GRIDS = {"prior": prior, "interpolate": interpolate, "manifold": manifold, "traverse": traverse}
MODES = tuple(GRIDS)


def run(cfg: DictConfig) -> Path:
    """Decode the grid for cfg.mode and save it as a PNG; return its path."""
    check_choice("mode", cfg.get("mode"), MODES)
    check_int("n", cfg.get("n"), low=1, example=256)
    if cfg.n > MAX_IMAGES:
        raise SettingError("n", cfg.n, f"must be <= {MAX_IMAGES} (one grid of images)")
    if cfg.get("nrow") is not None:
        check_int("nrow", cfg.nrow, low=1, note=" (or null for sqrt(n))")
    n, span = cfg.n, check_float("span", cfg.get("span"), low=0, low_ok=False, example=3)
    check_int("padding", cfg.get("padding"), low=0, example=2)
    nrow = cfg.nrow if cfg.nrow is not None else max(1, math.isqrt(n))
    device = pick_device(cfg.device)
    model, config = load_model(
        cfg.ckpt_path, map_location=str(device), overrides=requested_overrides(cfg)
    )
    name = f"sample_{cfg.mode}.png"
    out = output_file(
        cfg.out or run_folder(Path(str(cfg.ckpt_path)).expanduser()) / name,
        "out",
        name,
        suffixes=IMAGE_SUFFIXES,
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():
        z = GRIDS[cfg.mode](model, n=n, nrow=nrow, generator=generator, config=config, span=span)
        images = model.to_unit_range(model.decode(z)).cpu()
    save_image(images, out, nrow=nrow, padding=cfg.padding)
    print(f"wrote {out} ({cfg.mode}: {len(images)} images, {nrow} per row)")
    return out


@hydra.main(version_base="1.3", config_path=str(boundary.CONF_DIR), config_name="sample")
def hydra_main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except Exception as e:
        exit_with(boundary.report(e))


def main() -> None:
    boundary.run(hydra_main, "sample")


if __name__ == "__main__":
    main()
