"""What the latent space looks like in TensorBoard: KL per latent dimension, and the test set's
codes."""

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from vae_lightning.callbacks.tensorboard import tensorboard
from vae_lightning.errors import check_int
from vae_lightning.models.base import epoch_step
from vae_lightning.models.metrics import ACTIVE_UNIT_THRESHOLD


class LatentActivity(L.Callback):
    """Every validation epoch, how much of the latent space the model uses, in TensorBoard:

    - ``z/active_units``: dims whose posterior mean varies over the validation set,
      Cov_x(E_q[z_d]) > 0.01 (Burda et al. 2016) - the same definition as ``vae_lightning.eval``'s
      "active units"; for a model with several stochastic layers also ``z/active_units_<layer>``
      for each;
    - ``z/kl_per_dim``: a histogram of each dim's KL (mean over the validation set), for models
      whose KL factorizes over dims; collapsed dims pile up at 0, and ``z/kl_dims_above_0.01``
      counts the others (a KL-based count).

    They are measured on the validation set, and are named ``z/`` so that TensorBoard, which sorts
    its groups by name and opens the first two, lists them after the losses.
    """

    def __init__(self, tag: str = "z/kl_per_dim", threshold: float = 0.01):
        self.tag, self.threshold = tag, threshold
        self._reset()

    def _reset(self) -> None:
        self.kl: torch.Tensor | None = None
        # layer -> (sum of mu, sum of mu^2)
        self.sums: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.count = 0

    def on_validation_epoch_start(self, trainer, pl_module):
        self._reset()

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ):
        n = len(batch[0])
        # the model's own per-dim KL of this batch (no second pass)
        if outputs.get("kl_dims") is not None:
            kl = outputs["kl_dims"].double() * n
            self.kl = kl if self.kl is None else self.kl + kl
        for layer, mu in outputs["codes"].items():
            mu = mu.double()
            total, squares = self.sums.get(layer, (0.0, 0.0))
            self.sums[layer] = (total + mu.sum(0), squares + mu.pow(2).sum(0))
        self.count += n

    @rank_zero_only
    def on_validation_epoch_end(self, trainer, pl_module):
        writer = tensorboard(trainer)
        if writer is None or not self.sums or trainer.sanity_checking or self.count < 2:
            return
        step = epoch_step(trainer)  # the x-axis of every curve
        if self.kl is not None:
            kl = (self.kl / self.count).float().cpu()
            writer.add_histogram(self.tag, kl, step)
            writer.add_scalar(
                f"z/kl_dims_above_{self.threshold:g}", int((kl > self.threshold).sum()), step
            )
        active = {}
        for layer, (total, squares) in self.sums.items():
            # as torch.var
            variance = ((squares - total.pow(2) / self.count) / (self.count - 1)).cpu()
            active[layer] = int((variance > ACTIVE_UNIT_THRESHOLD).sum())
        writer.add_scalar("z/active_units", sum(active.values()), step)
        if len(active) > 1:
            for layer, units in active.items():
                writer.add_scalar(f"z/active_units_{layer}", units, step)


class LatentEmbedding(L.Callback):
    """At the end of training, the posterior means mu(x) of test images in TensorBoard's projector,
    with their class names and image sprites (a random subset of ``num_points``, fixed by
    ``seed``)."""

    def __init__(self, num_points: int = 1000, seed: int = 0, tag: str = "test_mu"):
        check_int("num_points", num_points, low=1, example=1000)
        self.num_points, self.seed, self.tag = (
            num_points,
            check_int("seed", seed, low=0, example=0),
            tag,
        )

    @rank_zero_only
    @torch.no_grad()
    def on_fit_end(self, trainer, pl_module):
        writer, datamodule = tensorboard(trainer), trainer.datamodule
        if writer is None or datamodule is None or not hasattr(datamodule, "examples"):
            return
        x, labels = datamodule.examples("test", self.num_points, self.seed)
        mu = torch.cat([pl_module.encode(part).float().cpu() for part in x.split(500)])
        names = datamodule.class_names
        metadata = [names[k] if names and 0 <= k < len(names) else str(k) for k in labels.tolist()]
        sprites = pl_module.to_unit_range(x.to(pl_module.device)).float().cpu()
        writer.add_embedding(
            mu, metadata=metadata, label_img=sprites, global_step=trainer.global_step, tag=self.tag
        )
        writer.flush()
