"""Every epoch, images in TensorBoard and as PNG files in the run folder: decoded samples of a fixed
set of latents (``train/samples``, beside the training losses: the first group TensorBoard opens),
and reconstructions of validation images (``val/reconstructions``). TensorBoard files them at the
step of the epoch's scalars (one x-axis for all)."""

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from PIL import Image
from torchvision.utils import make_grid

from vae_lightning.callbacks.tensorboard import tensorboard
from vae_lightning.errors import check_folder, check_int
from vae_lightning.models.base import epoch_step


def publish(
    trainer: L.Trainer, tag: str, images: torch.Tensor, nrow: int, png_dir: str | None
) -> None:
    """(N, C, H, W) images in [0, 1] as one grid of ``nrow`` per row into TensorBoard (at the
    epoch's step) and ``<png_dir>/<name>_epochNNN.png`` (``name``: the tag's last part; grey
    images as a grey PNG: a third of the bytes to compress, 14 instead of 43 ms for the 16 x 16
    MNIST grid here)."""
    grid = make_grid(images.float().cpu(), nrow=nrow)  # grey images come back as 3 equal channels
    writer = tensorboard(trainer)
    if writer is not None:
        writer.add_image(tag, grid, epoch_step(trainer))
    if png_dir:
        Path(png_dir).mkdir(parents=True, exist_ok=True)
        name = tag.rsplit("/", 1)[-1]
        channels = grid[:1] if images.shape[1] == 1 else grid
        # rounded to 8 bits as torchvision's save_image does; (H, W) for grey, (H, W, C) otherwise
        pixels = channels.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0)
        Image.fromarray(pixels.squeeze(-1).numpy()).save(
            Path(png_dir) / f"{name}_epoch{trainer.current_epoch:03d}.png"
        )


class SampleGrid(L.Callback):
    """Every epoch, log images decoded from z ~ p(z), the model's prior, drawn with the same seed
    each time.

    With a fixed prior (the standard normal) the grid shows the same latents as training goes on
    (tutorial: 256 samples, 16 x 16); a learned prior (mixture, VampPrior) moves them with it.
    """

    def __init__(
        self,
        num_samples: int = 256,
        nrow: int = 16,
        seed: int = 0,
        tag: str = "train/samples",
        png_dir: str | None = None,
    ):
        check_int("num_samples", num_samples, low=1, example=256)
        check_int("nrow", nrow, low=1, example=16)
        check_int("seed", seed, low=0, example=0)
        self.num_samples, self.nrow, self.seed, self.tag, self.png_dir = (
            num_samples,
            nrow,
            seed,
            tag,
            check_folder("png_dir", png_dir),
        )

    def latents(self, model) -> torch.Tensor:
        return model.sample_prior(
            self.num_samples, generator=torch.Generator().manual_seed(self.seed)
        )

    @rank_zero_only
    def on_train_epoch_end(self, trainer, pl_module):
        if tensorboard(trainer) is None and not self.png_dir:
            return
        images = pl_module.to_unit_range(pl_module.decode(self.latents(pl_module)))
        publish(trainer, self.tag, images, self.nrow, self.png_dir)


class Reconstructions(L.Callback):
    """Every epoch, log the first validation images (top row) above their reconstructions
    (bottom row)."""

    def __init__(
        self, num_images: int = 16, tag: str = "val/reconstructions", png_dir: str | None = None
    ):
        self.num_images, self.tag, self.png_dir = (
            check_int("num_images", num_images, low=1, example=16),
            tag,
            check_folder("png_dir", png_dir),
        )
        self.inputs: torch.Tensor | None = None

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ):
        if self.inputs is None and batch_idx == 0:
            self.inputs = batch[0][: self.num_images].detach().cpu()

    @rank_zero_only
    def on_validation_epoch_end(self, trainer, pl_module):
        if (
            (tensorboard(trainer) is None and not self.png_dir)
            or self.inputs is None
            or trainer.sanity_checking
        ):
            return
        recon = pl_module.reconstruct(self.inputs).cpu()
        images = pl_module.to_unit_range(torch.cat([self.inputs.to(recon.dtype), recon]))
        publish(trainer, self.tag, images, len(self.inputs), self.png_dir)
