"""What the latent space looks like in TensorBoard: KL per latent dimension, and the test set's codes."""

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from vae_lightning.callbacks.tensorboard import tensorboard


class KLHistogram(L.Callback):
    """Every epoch, a histogram of the KL of each latent dim (mean over the validation set).

    Collapsed dims pile up at 0 nats; the scalar ``val/kl_dims_above_0.01`` counts the others.
    """

    def __init__(self, tag: str = "kl_per_dim", threshold: float = 0.01):
        self.tag, self.threshold = tag, threshold
        self.total: torch.Tensor | None = None
        self.count = 0

    def on_validation_epoch_start(self, trainer, pl_module):
        self.total, self.count = None, 0

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        n = len(batch[0])
        kl = outputs["kl_dims"].float() * n  # the module's own per-dim KL of this batch (no second pass)
        self.total = kl if self.total is None else self.total + kl
        self.count += n

    @rank_zero_only
    def on_validation_epoch_end(self, trainer, pl_module):
        writer = tensorboard(trainer)
        if writer is None or self.total is None or trainer.sanity_checking:
            return
        kl = (self.total / self.count).cpu()
        writer.add_histogram(self.tag, kl, trainer.current_epoch)
        writer.add_scalar(f"val/kl_dims_above_{self.threshold:g}", int((kl > self.threshold).sum()), trainer.current_epoch)


class LatentEmbedding(L.Callback):
    """At the end of training, the posterior means mu(x) of test images in TensorBoard's projector,
    with their class names and image sprites (a random subset of ``num_points``, fixed by ``seed``)."""

    def __init__(self, num_points: int = 1000, seed: int = 0, tag: str = "test_mu"):
        self.num_points, self.seed, self.tag = num_points, seed, tag

    @rank_zero_only
    @torch.no_grad()
    def on_fit_end(self, trainer, pl_module):
        writer, datamodule = tensorboard(trainer), trainer.datamodule
        if writer is None or datamodule is None or not hasattr(datamodule, "examples"):
            return
        x, labels = datamodule.examples("test", self.num_points, self.seed)
        mu = torch.cat([pl_module.encode(part)[0].float().cpu() for part in x.split(500)])
        names = datamodule.class_names
        metadata = [names[k] if names and 0 <= k < len(names) else str(k) for k in labels.tolist()]
        sprites = pl_module.to_unit_range(x.to(pl_module.device)).float().cpu()
        writer.add_embedding(mu, metadata=metadata, label_img=sprites, global_step=trainer.global_step, tag=self.tag)
        writer.flush()
