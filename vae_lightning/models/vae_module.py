"""The LightningModule: training a VAE, whose network is a component (``model.net``), on the ELBO or the IWAE bound.

What the rest of the template (callbacks, eval, sample, notebooks) may use, and nothing more:

    latent_dim, input_shape          ints / (C, H, W)
    encode(x) -> (mu, logvar)        posterior of normalized images x (B, C, H, W); each (B, latent_dim)
    decode(z) -> images              the likelihood's mean E[x | z] in the data range, (B, C, H, W)
    reconstruct(x) -> images         decode(mu(x)): deterministic reconstructions
    log_likelihood(x, z) -> (B,)     log p(x | z) in nats (summed over pixels)
    losses(x) -> dict                loss (negative ELBO), recon, kl, objective, kl_dims (batch means);
                                     iw_loss (negative IW bound with k = iw_k) when objective=iwae
    to_unit_range(images)            data-range images -> [0, 1] for display, per channel
"""

import inspect
import math
from collections.abc import Callable, Mapping, Sequence

import lightning as L
import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torchmetrics import MeanMetric

from vae_lightning.errors import (
    SettingError,
    check_bool,
    check_choice,
    check_float,
    check_int,
    first_line,
    instantiate_component,
)
from vae_lightning.models.likelihoods import Likelihood, per_channel_range
from vae_lightning.models.metrics import log_weight_terms
from vae_lightning.models.networks.base import VAENet

STAGES, TERMS = ("train", "val", "test"), ("loss", "recon", "kl")
OBJECTIVE = "objective"  # what the gradient follows in training when it differs from the ELBO
IW_LOSS = "iw_loss"  # the negative importance-weighted bound (objective=iwae), nats per image
OBJECTIVES = ("elbo", "iwae")
DEFAULT_NET = {"_target_": "vae_lightning.models.networks.MLPNet", "hidden_dims": [512, 256]}


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Analytic KL(N(mu, exp(logvar)) || N(0, 1)) for every latent dimension, shape (B, D)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def build_net(net: Mapping, input_shape: Sequence[int], latent_dim: int) -> VAENet:
    """The network from its config (``_target_`` + its own settings), checked against the interface."""
    if not isinstance(net, Mapping) or "_target_" not in net:
        raise SettingError("net", net, "must be a config with a _target_, e.g. model/net=mlp or model/net=conv")
    try:
        cls = get_class(str(net["_target_"]))
    except Exception as e:  # not importable, or not a class
        reason = first_line(e)
        raise SettingError("net._target_", net["_target_"], f"cannot be loaded ({reason}): give module.ClassName") from None
    if not issubclass(cls, VAENet):
        raise SettingError(
            "net._target_", net["_target_"], "is not a network: it must subclass vae_lightning.models.networks.VAENet"
        )
    return instantiate_component(net, "net", input_shape=list(input_shape), latent_dim=latent_dim)


class VAEModule(L.LightningModule):
    """Training of the VAE; every term is in nats per image (summed over pixels / latent dims, batch mean).

    ``loss`` (logged as */loss, monitored as val/loss) is always the true negative ELBO, recon + KL,
    so runs with different knobs compare on the same number.

    ``objective=elbo``: the gradient follows recon + beta_t * sum_d max(KL_d, free_bits), where beta_t
    rises linearly from 0 to ``kl_weight`` over the first ``kl_warmup_epochs`` epochs and KL_d is the
    batch-mean KL of latent dim d; it is logged as train/objective when it differs from the ELBO.

    ``objective=iwae``: the gradient follows the negative importance-weighted bound of Burda et al.
    (2016), -log (1/k) sum_i p(x | z_i) (p(z_i) / q(z_i | x))^beta_t with k = ``iw_k`` reparameterized
    draws z_i ~ q(z | x); it is logged as */iw_loss. k=1 is the ELBO (with a Monte Carlo KL), larger
    k a tighter bound. recon is then the mean over the same k draws.

    ``net`` is the network's config (``_target_`` and its settings; default: the tutorial MLP).
    ``input_shape`` and ``data_range`` come from the DataModule. All hyperparameters are plain
    Python values, so a checkpoint alone rebuilds the model (``torch.load(weights_only=True)``).
    """

    def __init__(
        self,
        net: Mapping | None = None,
        latent_dim: int = 20,
        loss: str = "bce",
        kl_weight: float = 1.0,
        kl_warmup_epochs: int = 0,
        free_bits: float = 0.0,
        objective: str = "elbo",
        iw_k: int = 1,
        compile: bool = False,
        compile_mode: str | None = None,
        input_shape: Sequence[int] = (1, 28, 28),
        data_range: Sequence = (0.0, 1.0),
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., object] | None = None,
    ) -> None:
        super().__init__()
        check_int("latent_dim", latent_dim, low=1, example=20)
        check_float("kl_weight", kl_weight, low=0, note=" (1 is the ELBO, other values give a beta-VAE)")
        check_int("kl_warmup_epochs", kl_warmup_epochs, low=0, example=10, note=" (0 = no warm-up)")
        check_float("free_bits", free_bits, low=0, example=0.5, note=" nats per latent dim (0 = off)")
        check_choice("objective", objective, OBJECTIVES)
        check_int("iw_k", iw_k, low=1, example=5, note=" (importance samples per image for objective=iwae)")
        if objective == "iwae" and free_bits > 0:
            raise SettingError("free_bits", free_bits, "applies to objective=elbo only: use free_bits=0 with objective=iwae")
        check_bool("compile", compile)
        # plain Python types, so checkpoints load with torch.load(weights_only=True)
        net = OmegaConf.to_container(net, resolve=True) if isinstance(net, DictConfig) else dict(net or DEFAULT_NET)
        input_shape, data_range = [int(s) for s in input_shape], list(per_channel_range(data_range))
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.optimizer_factory = optimizer or torch.optim.Adam
        self.scheduler_factory = scheduler
        self.likelihood = Likelihood(loss, data_range)
        self.net = build_net(net, input_shape, latent_dim)
        self.latent_dim, self.input_shape = latent_dim, tuple(input_shape)
        self.run_config: dict | None = None  # the composed Hydra config, saved into checkpoints
        # nan_strategy="disable": no host sync per step; divergence is caught on the loss itself.
        self.metrics = nn.ModuleDict(
            {f"{s}_{t}": MeanMetric(nan_strategy="disable") for s in STAGES for t in (*TERMS, IW_LOSS)}
            | {f"train_{OBJECTIVE}": MeanMetric(nan_strategy="disable")}
        )

    def configure_model(self) -> None:
        """``compile``: torch.compile the network in place (state-dict keys stay the same)."""
        if self.hparams.compile and not getattr(self, "_compiled", False):
            self.net.compile(mode=self.hparams.compile_mode)
            self._compiled = True

    # the interface for callbacks, eval, sample and notebooks -----------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.posterior(x.to(self.device))

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.likelihood.mean(self.net.decode(z.to(self.device)))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)[0])

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return -self.likelihood.nll(self.net.decode(z), x)

    def to_unit_range(self, images: torch.Tensor) -> torch.Tensor:
        lo, scale = self.likelihood.lo.to(images.device), self.likelihood.scale.to(images.device)
        return ((images - lo) / scale).clamp(0, 1)

    def forward(self, x: torch.Tensor):
        return self.net(x)

    # training ---------------------------------------------------------------------------------
    @property
    def iwae(self) -> bool:
        return self.hparams.get("objective", "elbo") == "iwae"

    @property
    def shapes_objective(self) -> bool:
        """True when a knob makes the training objective differ from the negative ELBO (or from the IW bound)."""
        hp = self.hparams
        return hp.kl_weight != 1.0 or hp.kl_warmup_epochs > 0 or hp.free_bits > 0

    def kl_weight_at(self, epoch: float) -> float:
        """beta at a (fractional) epoch: linear from 0 to kl_weight over kl_warmup_epochs, then constant."""
        warmup = self.hparams.kl_warmup_epochs
        return self.hparams.kl_weight * (min(1.0, epoch / warmup) if warmup > 0 else 1.0)

    def losses(self, x: torch.Tensor, kl_weight: float | None = None) -> dict[str, torch.Tensor]:
        """loss (negative ELBO), recon and kl, plus the objective with beta = ``kl_weight`` (default: the full beta);
        also the batch-mean KL of each latent dim and the posterior means mu; with objective=iwae also iw_loss."""
        beta = self.hparams.kl_weight if kl_weight is None else kl_weight
        if self.iwae:
            return self.iwae_losses(x, beta)
        logits, mu, logvar = self.net(x)
        recon = self.likelihood.nll(logits, x).mean()
        kl_dims = kl_per_dim(mu.float(), logvar.float()).mean(0)
        kl = kl_dims.sum()
        objective = recon + beta * kl_dims.clamp(min=self.hparams.free_bits).sum()
        return {"loss": recon + kl, "recon": recon, "kl": kl, OBJECTIVE: objective, "kl_dims": kl_dims, "mu": mu}

    def iwae_losses(self, x: torch.Tensor, beta: float) -> dict[str, torch.Tensor]:
        """The IWAE bound with k = iw_k draws per image, beside the ELBO terms (recon over the same draws)."""
        k = self.hparams.iw_k
        mu, logvar = self.net.posterior(x)
        log_px_z, log_prior_ratio = log_weight_terms(self, x, mu, logvar, k, rsample=True)  # (k, B) each

        def negative_bound(weight: float) -> torch.Tensor:  # -log (1/k) sum_i p(x | z_i) (p(z_i) / q(z_i | x))^weight
            return -(torch.logsumexp(log_px_z + weight * log_prior_ratio, dim=0) - math.log(k)).mean()

        iw_loss = negative_bound(1.0)
        objective = iw_loss if beta == 1.0 else negative_bound(beta)
        recon = -log_px_z.mean()
        kl_dims = kl_per_dim(mu.float(), logvar.float()).mean(0)
        kl = kl_dims.sum()
        return {
            "loss": recon + kl,
            "recon": recon,
            "kl": kl,
            IW_LOSS: iw_loss,
            OBJECTIVE: objective,
            "kl_dims": kl_dims,
            "mu": mu,
        }

    def _step(self, stage: str, batch, kl_weight: float | None = None) -> dict[str, torch.Tensor]:
        x, _ = batch
        out = self.losses(x, kl_weight)
        for term in self._terms(stage):
            # one entry per image, so the epoch value is the per-image mean even when the last batch is
            # short (MeanMetric drops ``weight`` under nan_strategy="disable", torchmetrics 1.9)
            self.metrics[f"{stage}_{term}"].update(out[term].detach().expand(x.shape[0]))
        return out

    def _terms(self, stage: str) -> tuple[str, ...]:
        return TERMS + ((IW_LOSS,) if self.iwae else ()) + ((OBJECTIVE,) if stage == "train" and self.shapes_objective else ())

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
        """Returns the batch-mean KL of each latent dim and the posterior means (callbacks.LatentActivity reads them)."""
        out = self._step("val", batch)
        return {"kl_dims": out["kl_dims"].detach(), "mu": out["mu"].detach()}

    def test_step(self, batch, batch_idx):
        self._step("test", batch)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.run_config is not None:
            checkpoint["run_config"] = self.run_config

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.run_config = checkpoint.get("run_config")

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        if "steps_per_epoch" in inspect.signature(self.scheduler_factory).parameters:  # a schedule in optimizer steps
            epochs = max(1, self.trainer.max_epochs or 1)
            steps_per_epoch = self.trainer.estimated_stepping_batches / epochs if self.trainer.max_epochs != -1 else 1
            scheduler = self.scheduler_factory(optimizer, steps_per_epoch=steps_per_epoch)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss"}}
