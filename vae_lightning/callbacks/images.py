"""Every epoch, images in TensorBoard: decoded samples of a fixed set of latents, and reconstructions."""

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torchvision.utils import make_grid

from vae_lightning.callbacks.tensorboard import tensorboard


class SampleGrid(L.Callback):
    """Every epoch, log images decoded from one FIXED batch of z ~ N(0, I), drawn once per run.

    The grid shows the same latents as training goes on (tutorial: 256 samples, 16 x 16).
    """

    def __init__(self, num_samples: int = 256, nrow: int = 16, seed: int = 0, tag: str = "samples"):
        self.num_samples, self.nrow, self.seed, self.tag = num_samples, nrow, seed, tag

    def latents(self, latent_dim: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed)
        return torch.randn(self.num_samples, latent_dim, generator=g)

    @rank_zero_only
    def on_train_epoch_end(self, trainer, pl_module):
        writer = tensorboard(trainer)
        if writer is None:
            return
        images = pl_module.to_unit_range(pl_module.decode(self.latents(pl_module.latent_dim)))
        writer.add_image(self.tag, make_grid(images.float().cpu(), nrow=self.nrow), trainer.current_epoch)


class Reconstructions(L.Callback):
    """Every epoch, log the first validation images (top row) above their reconstructions (bottom row)."""

    def __init__(self, num_images: int = 16, tag: str = "reconstructions"):
        self.num_images, self.tag = num_images, tag
        self.inputs: torch.Tensor | None = None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if self.inputs is None and batch_idx == 0:
            self.inputs = batch[0][: self.num_images].detach().cpu()

    @rank_zero_only
    def on_validation_epoch_end(self, trainer, pl_module):
        writer = tensorboard(trainer)
        if writer is None or self.inputs is None or trainer.sanity_checking:
            return
        recon = pl_module.reconstruct(self.inputs).cpu()
        images = pl_module.to_unit_range(torch.cat([self.inputs.to(recon.dtype), recon]))
        writer.add_image(self.tag, make_grid(images.float(), nrow=len(self.inputs)), trainer.current_epoch)
