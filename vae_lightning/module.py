"""The LightningModule: ELBO training of the VAE, epoch metrics via torchmetrics."""

import math
from collections.abc import Callable, Sequence

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanMetric

from vae_lightning.errors import UserError
from vae_lightning.losses import LOSSES, kl_per_dim, reconstruction
from vae_lightning.model import VAE

STAGES, TERMS = ("train", "val", "test"), ("loss", "recon", "kl")


def check_loss_matches_data(loss: str, data_range: Sequence[float]) -> None:
    """Refuse a likelihood that cannot model the data range (the tutorial's BCE on [-1, 1])."""
    if loss not in LOSSES:
        raise UserError(f"model.loss={loss!r} is not one of {', '.join(LOSSES)}")
    lo, hi = data_range
    if loss == "bce" and not (math.isclose(lo, 0.0, abs_tol=1e-6) and math.isclose(hi, 1.0, abs_tol=1e-6)):
        raise UserError(
            f"model.loss=bce needs pixels in [0, 1] but data.mean/data.std put them in [{lo:g}, {hi:g}]: "
            "use data.mean=0 data.std=1, or model.loss=mse for other ranges"
        )


class VAEModule(L.LightningModule):
    """Loss per image (nats) = recon + kl_weight * KL, summed over pixels / latent dims, mean over the batch."""

    def __init__(
        self,
        latent_dim: int = 20,
        hidden_dims: Sequence[int] = (512, 256),
        loss: str = "bce",
        kl_weight: float = 1.0,
        input_shape: Sequence[int] = (1, 28, 28),
        data_range: Sequence[float] = (0.0, 1.0),
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., object] | None = None,
    ) -> None:
        super().__init__()
        check_loss_matches_data(loss, data_range)
        # plain Python types, so checkpoints load with torch.load(weights_only=True)
        hidden_dims, input_shape, data_range = list(hidden_dims), list(input_shape), [float(v) for v in data_range]
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.optimizer_factory = optimizer or torch.optim.Adam
        self.scheduler_factory = scheduler
        self.input_shape = tuple(input_shape)
        self.run_config: dict | None = None  # the composed Hydra config, saved into checkpoints
        self.net = VAE(math.prod(self.input_shape), list(hidden_dims), latent_dim, tuple(data_range))
        # nan_strategy="disable": no host sync per step; divergence is caught on the loss itself.
        self.metrics = nn.ModuleDict(
            {f"{s}_{t}": MeanMetric(nan_strategy="disable") for s in STAGES for t in TERMS}
        )

    def forward(self, x: torch.Tensor):
        return self.net(x)

    def losses(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits, mu, logvar = self.net(x)
        recon = reconstruction(self.hparams.loss, logits, x, self.net.activate).mean()
        kl = kl_per_dim(mu, logvar).sum(1).mean()
        return {"loss": recon + self.hparams.kl_weight * kl, "recon": recon, "kl": kl}

    def _step(self, stage: str, batch) -> torch.Tensor:
        x, _ = batch
        out = self.losses(x)
        for term, value in out.items():
            metric = self.metrics[f"{stage}_{term}"]
            metric.update(value.detach(), weight=x.shape[0])
            self.log(f"{stage}/{term}", metric, on_step=False, on_epoch=True, prog_bar=term == "loss")
        return out["loss"]

    def training_step(self, batch, batch_idx):
        return self._step("train", batch)

    def validation_step(self, batch, batch_idx):
        self._step("val", batch)

    def test_step(self, batch, batch_idx):
        self._step("test", batch)

    # helpers for callbacks, eval and notebooks -------------------------------------------
    @torch.no_grad()
    def sample(self, z: torch.Tensor) -> torch.Tensor:
        """Decoded images (N, C, H, W) in the data range for latent codes z."""
        return self.net.decode(z.to(self.device)).view(-1, *self.input_shape)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decoder output at the posterior mean (deterministic)."""
        mu, _ = self.net.encode(x.to(self.device))
        return self.sample(mu)

    def to_unit_range(self, x: torch.Tensor) -> torch.Tensor:
        """Map data-range images to [0, 1] for display."""
        lo, hi = self.hparams.data_range
        return ((x - lo) / (hi - lo)).clamp(0, 1)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.run_config is not None:
            checkpoint["run_config"] = self.run_config

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.run_config = checkpoint.get("run_config")

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss"}}
