"""The LightningModule: ELBO training of the VAE, epoch metrics via torchmetrics."""

import math
from collections.abc import Callable, Sequence

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanMetric

from vae_lightning.errors import UserError
from vae_lightning.losses import LOSSES, UNIT_RANGE_LOSSES, kl_per_dim, likelihood_mean, reconstruction
from vae_lightning.model import VAE

STAGES, TERMS = ("train", "val", "test"), ("loss", "recon", "kl")
OBJECTIVE = "objective"  # what the gradient follows in training when it differs from the ELBO


def check_loss_matches_data(loss: str, data_range: Sequence[float]) -> None:
    """Refuse a likelihood that cannot model the data range (the tutorial's BCE on [-1, 1])."""
    if loss not in LOSSES:
        raise UserError(f"model.loss={loss!r} is not one of {', '.join(LOSSES)}")
    lo, hi = data_range
    if loss in UNIT_RANGE_LOSSES and not (math.isclose(lo, 0.0, abs_tol=1e-6) and math.isclose(hi, 1.0, abs_tol=1e-6)):
        raise UserError(
            f"model.loss={loss} needs pixels in [0, 1] but data.mean/data.std put them in [{lo:g}, {hi:g}]: "
            "use data.mean=0 data.std=1, or model.loss=mse for other ranges"
        )


class VAEModule(L.LightningModule):
    """ELBO training of the VAE; every term is in nats per image (summed over pixels / latent dims, batch mean).

    ``loss`` (logged as */loss, monitored as val/loss) is always the true negative ELBO, recon + KL,
    so runs with different knobs compare on the same number. The gradient follows the objective
    recon + beta_t * sum_d max(KL_d, free_bits), where beta_t rises linearly from 0 to ``kl_weight``
    over the first ``kl_warmup_epochs`` epochs and KL_d is the batch-mean KL of latent dim d; it is
    logged as train/objective when it differs from the ELBO.
    """

    def __init__(
        self,
        latent_dim: int = 20,
        hidden_dims: Sequence[int] = (512, 256),
        loss: str = "bce",
        kl_weight: float = 1.0,
        kl_warmup_epochs: int = 0,
        free_bits: float = 0.0,
        compile: bool = False,
        compile_mode: str | None = None,
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
            | {f"train_{OBJECTIVE}": MeanMetric(nan_strategy="disable")}
        )

    def configure_model(self) -> None:
        """``compile``: torch.compile the network in place (state-dict keys stay the same)."""
        if self.hparams.compile and not getattr(self, "_compiled", False):
            self.net.compile(mode=self.hparams.compile_mode)
            self._compiled = True

    def forward(self, x: torch.Tensor):
        return self.net(x)

    @property
    def shapes_objective(self) -> bool:
        """True when a knob makes the training objective differ from the negative ELBO."""
        hp = self.hparams
        return hp.kl_weight != 1.0 or hp.kl_warmup_epochs > 0 or hp.free_bits > 0

    def kl_weight_at(self, epoch: float) -> float:
        """beta at a (fractional) epoch: linear from 0 to kl_weight over kl_warmup_epochs, then constant."""
        warmup = self.hparams.kl_warmup_epochs
        return self.hparams.kl_weight * (min(1.0, epoch / warmup) if warmup > 0 else 1.0)

    def losses(self, x: torch.Tensor, kl_weight: float | None = None) -> dict[str, torch.Tensor]:
        """loss (negative ELBO), recon and kl, plus the objective with beta = ``kl_weight`` (default: the full beta)."""
        logits, mu, logvar = self.net(x)
        recon = reconstruction(self.hparams.loss, logits, x, self.net.activate).mean()
        kl_dims = kl_per_dim(mu, logvar).mean(0)
        kl = kl_dims.sum()
        beta = self.hparams.kl_weight if kl_weight is None else kl_weight
        objective = recon + beta * kl_dims.clamp(min=self.hparams.free_bits).sum()
        return {"loss": recon + kl, "recon": recon, "kl": kl, OBJECTIVE: objective, "kl_dims": kl_dims}

    def _step(self, stage: str, batch, kl_weight: float | None = None) -> dict[str, torch.Tensor]:
        x, _ = batch
        out = self.losses(x, kl_weight)
        for term in self._terms(stage):
            # one entry per image, so the epoch value is the per-image mean even when the last batch is
            # short (MeanMetric drops ``weight`` under nan_strategy="disable", torchmetrics 1.9)
            self.metrics[f"{stage}_{term}"].update(out[term].detach().expand(x.shape[0]))
        return out

    def _terms(self, stage: str) -> tuple[str, ...]:
        return TERMS + ((OBJECTIVE,) if stage == "train" and self.shapes_objective else ())

    def _log_epoch(self, stage: str) -> None:
        """Log each term's epoch mean once (synced across ranks by torchmetrics), then reset it.

        Logging once per epoch instead of handing the metric to ``self.log`` every step keeps
        Lightning's per-step bookkeeping out of the hot path.
        """
        for term in self._terms(stage):
            metric = self.metrics[f"{stage}_{term}"]
            if metric.update_count:
                self.log(f"{stage}/{term}", metric.compute(), prog_bar=term == "loss", sync_dist=True)
            metric.reset()

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def training_step(self, batch, batch_idx):
        beta = self.hparams.kl_weight
        if self.hparams.kl_warmup_epochs > 0:
            beta = self.kl_weight_at(self.current_epoch + batch_idx / max(1, self.trainer.num_training_batches))
            self.log("train/kl_weight", beta, on_step=False, on_epoch=True)
        return self._step("train", batch, beta)[OBJECTIVE]

    def validation_step(self, batch, batch_idx):
        """Returns the batch-mean KL of each latent dim (callbacks.KLHistogram reads it)."""
        return {"kl_dims": self._step("val", batch)["kl_dims"].detach()}

    def test_step(self, batch, batch_idx):
        self._step("test", batch)

    # helpers for callbacks, eval and notebooks -------------------------------------------
    @torch.no_grad()
    def sample(self, z: torch.Tensor) -> torch.Tensor:
        """Decoded images (N, C, H, W) in the data range for latent codes z: the likelihood's mean."""
        logits = self.net.decode_logits(z.to(self.device))
        return likelihood_mean(self.hparams.loss, logits, self.net.activate).view(-1, *self.input_shape)

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
