"""The base of every model: a LightningModule that eval, sample, the callbacks and the notebooks use
through this interface alone, so a new model is one file (a subclass) and one
yaml (``conf/model/<name>.yaml``).

What a model implements:

    log_weight_terms(x, n)     (log p(x | z_i), log p(z_i) - log q(z_i | x)), each (n, B), for n
                               fresh reparameterized draws z_i ~ q(z | x) per image (every
                               stochastic layer)
    losses(x, kl_weight=None)  dict of batch means in nats per image: loss (the negative ELBO),
                               recon, kl, objective (what the gradient follows), the ``extra_terms``
                               it declares, and optionally kl_dims (KL per latent dim) and, outside
                               training, codes (as ``codes``, when they come for free; else
                               validation calls ``codes``). The base's: the ELBO by Monte Carlo on
                               one draw of ``log_weight_terms`` (hvae.py, two_level.py use it)
    codes(x)                   {layer name: posterior means (B, D_layer)}, the top layer last
    encode_gaussian(x)         (mu, logvar) of the top layer's Gaussian posterior (the VampPrior
                               encodes with it)
    decode_logits(z)           top-layer z (B, latent_dim) -> the decoder's output
                               for the likelihood
    latent_dim, prior          size of the top layer, and p(z) over it (``priors.Prior``)

Optional: run the decoder's pass to the pixels inside ``with self.decoding():`` in
``log_weight_terms``. eval's IW estimate then runs it in bf16 (``eval.precision``), keeping the
likelihood and the densities float32; a model that does not use it is evaluated in float32.
And split ``log_weight_terms(x, n)`` into ``per_image(x)`` (a tuple of tensors: what it computes
from the images alone, e.g. the first encoder) and ``log_weight_terms_from(per_image, n)``: eval's
IW estimate then encodes each batch once instead of once per chunk of draws (vae.py, hvae.py,
two_level.py). A subclass that overrides only ``log_weight_terms`` is estimated through that
override (``split_draws`` is False for it).

What the base provides from those: encode (top-layer code), decode, reconstruct, sample_prior,
log_weights (what the importance-weighted estimate in ``metrics.py`` needs), to_unit_range; the
per-epoch logging of every term (``*/loss`` is always the true negative ELBO), the KL weight
schedule, optimizer and scheduler wiring, the run's config in checkpoints, and
``load_from_checkpoint`` that returns the class a checkpoint was trained with.
"""

import inspect
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import lightning as L
import torch
from torch import nn

from vae_lightning.errors import SettingError, check_bool, check_choice, check_float, check_int
from vae_lightning.models.components import build, load_class, plain
from vae_lightning.models.likelihoods import Likelihood, bits_per_dim, per_channel_range
from vae_lightning.models.numerics import logsumexp
from vae_lightning.models.priors.base import Prior
from vae_lightning.models.term_means import TermMeans

STAGES, TERMS = ("train", "val", "test"), ("loss", "recon", "kl")
# what the gradient follows in training, logged when it differs from the ELBO
OBJECTIVE = "objective"
# torch.compile's modes
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
MODEL_CLASS = "model_class"  # the checkpoint key naming the class a checkpoint was trained with


# the likelihood that each short name of before (``loss``) was
LOSSES = {
    "bce": "vae_lightning.models.likelihoods.Bernoulli",
    "cb": "vae_lightning.models.likelihoods.ContinuousBernoulli",
    "mse": "vae_lightning.models.likelihoods.Gaussian",
}


def likelihood_config(likelihood, loss: str | None) -> dict:
    """The likelihood's config: ``likelihood`` as given, or the one ``loss`` named in checkpoints
    of before the likelihood was a component (Bernoulli when neither is given)."""
    if loss is not None and likelihood is not None:
        raise SettingError(
            "loss",
            loss,
            "is now chosen as the likelihood component: use model/likelihood=bernoulli (was "
            "bce), continuous_bernoulli (cb) or gaussian (mse)",
        )
    if likelihood is not None:
        return likelihood
    if loss is not None and loss not in LOSSES:
        check_choice("loss", loss, tuple(LOSSES))
    return {"_target_": LOSSES[loss or "bce"]}


def epoch_step(trainer: L.Trainer) -> int:
    """The x value of what is logged at an epoch's end: the epoch's last training step. The model's
    epoch scalars (val/loss...) and the callbacks' images and histograms all go there."""
    return max(trainer.global_step - 1, 0)


def elbo_terms(
    log_px_z: torch.Tensor, log_ratio: torch.Tensor, beta: float = 1.0
) -> dict[str, torch.Tensor]:
    """The Monte Carlo ELBO over the draws of ``log_weight_terms``, (n, B) each: loss (its
    negative), recon, kl, and the objective with the KL weighted by ``beta``."""
    recon, kl = -log_px_z.mean(), -log_ratio.mean()
    return {"loss": recon + kl, "recon": recon, "kl": kl, OBJECTIVE: recon + beta * kl}


def iw_bound(
    log_px_z: torch.Tensor, log_ratio: torch.Tensor, beta: float = 1.0
) -> dict[str, torch.Tensor]:
    """The importance-weighted bound of Burda et al. (2016) from k draws per image, (k, B) each:
    iw_loss = -log (1/k) sum_i p(x | z_i) p(z_i) / q(z_i | x); objective: the same with the prior
    ratio ^ beta; loss, recon and kl: the Monte Carlo ELBO over the same draws."""
    k = log_px_z.shape[0]

    def negative_bound(weight: float) -> torch.Tensor:
        return -(logsumexp(log_px_z + weight * log_ratio, dim=0) - math.log(k)).mean()

    iw_loss = negative_bound(1.0)
    objective = iw_loss if beta == 1.0 else negative_bound(beta)
    return {**elbo_terms(log_px_z, log_ratio), "iw_loss": iw_loss, OBJECTIVE: objective}


def recorded_class(checkpoint: dict) -> type | None:
    """The model class a checkpoint was trained with (None for checkpoints written before the
    model family)."""
    target = checkpoint.get(MODEL_CLASS)
    return None if target is None else load_class(target, "model", BaseVAE)


class BaseVAE(L.LightningModule):
    """``likelihood`` is the config of p(x | z), a component (``model/likelihood``; ``loss``, its
    short name in checkpoints of before, bce | cb | mse, still loads); ``kl_weight`` (beta) and
    ``kl_warmup_epochs`` weight the prior term of the objective (beta rises linearly from 0 over the
    warm-up); ``input_shape``, ``data_range`` and ``pixel_levels`` come from the DataModule.
    Hyperparameters are stored as plain values, so a checkpoint alone rebuilds the model with
    ``torch.load(weights_only=True)``, whatever the subclass's ``__init__`` looks like."""

    # more per-image terms that losses() returns and */<term> logs
    extra_terms: tuple[str, ...] = ()

    def __init__(
        self,
        likelihood=None,
        loss: str | None = None,
        kl_weight: float = 1.0,
        kl_warmup_epochs: int = 0,
        compile: bool = False,
        compile_mode: str | None = None,
        input_shape=(1, 28, 28),
        data_range=(0.0, 1.0),
        pixel_levels: int | None = 256,
        optimizer=None,
        scheduler=None,
    ) -> None:
        super().__init__()
        check_float(
            "kl_weight",
            kl_weight,
            low=0,
            high=1e10,
            note=(
                " (1 is the ELBO, other values give a beta-VAE; "
                "larger ones overflow the float32 loss)"
            ),
        )
        check_int("kl_warmup_epochs", kl_warmup_epochs, low=0, example=10, note=" (0 = no warm-up)")
        check_bool("compile", compile)
        if compile_mode is not None:  # torch.compile reads it at the first step only
            check_choice("compile_mode", compile_mode, COMPILE_MODES)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.hparams.update({k: plain(v) for k, v in self.hparams.items()})
        self.hparams.update(
            input_shape=[int(s) for s in input_shape],
            data_range=plain(per_channel_range(data_range)),
        )
        self.input_shape = tuple(self.hparams.input_shape)
        self.optimizer_factory = optimizer or torch.optim.Adam
        self.scheduler_factory = scheduler
        self.likelihood = build(
            likelihood_config(likelihood, loss),
            "likelihood",
            Likelihood,
            "likelihood",
            input_shape=self.input_shape,
            data_range=self.hparams.data_range,
            pixel_levels=pixel_levels,
        )
        self.run_config: dict | None = None  # the composed Hydra config, saved into checkpoints
        terms = (*TERMS, *self.extra_terms)
        self.metrics = nn.ModuleDict(  # "<stage>_terms" (a key "train" would shadow .train())
            {f"{s}_terms": TermMeans(terms + ((OBJECTIVE,) * (s == "train"))) for s in STAGES}
        )
        self._compiled_losses = None  # model.compile=true: the compiled training pass

    # what a model implements ------------------------------------------------------------------
    latent_dim: int
    prior: nn.Module

    def log_weight_terms(self, x: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    # eval's estimate uses a class's split (per_image + log_weight_terms_from) unless a subclass
    # overrides log_weight_terms below it: that override is then what eval runs
    split_draws = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        owner = {
            n: next(c for c in cls.__mro__ if n in vars(c))
            for n in ("log_weight_terms", "log_weight_terms_from")
        }
        cls.split_draws = issubclass(owner["log_weight_terms_from"], owner["log_weight_terms"])

    def per_image(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """What ``log_weight_terms`` computes from the images alone (the default: the images):
        eval's IW estimate computes it once per batch, then ``log_weight_terms_from`` per chunk."""
        return (x,)

    def log_weight_terms_from(
        self, per_image: tuple[torch.Tensor, ...], n: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``log_weight_terms`` from ``per_image(x)``: n fresh draws per image. Optional: eval
        calls it only for a class that defines it at or below its ``log_weight_terms``
        (``split_draws``); otherwise ``log_weights_from`` runs ``log_weight_terms`` itself."""
        raise NotImplementedError

    def losses(self, x: torch.Tensor, kl_weight: float | None = None) -> dict[str, torch.Tensor]:
        """The ELBO by Monte Carlo on one draw of every stochastic layer (``log_weight_terms``
        with n = 1); a model with analytic KL terms or another objective overrides it."""
        beta = self.hparams.kl_weight if kl_weight is None else kl_weight
        return elbo_terms(*self.log_weight_terms(x, 1), beta)

    def codes(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def encode_gaussian(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def build_prior(self, prior) -> Prior:
        """The prior component (``model/prior``) over the top layer's ``latent_dim`` units."""
        return build(
            prior,
            "prior",
            Prior,
            "prior",
            latent_dim=self.latent_dim,
            input_shape=list(self.input_shape),
            data_range=self.hparams.data_range,
        )

    # the interface for callbacks, eval, sample and notebooks -----------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The top layer's posterior mean for images x: (B, latent_dim)."""
        return list(self.codes(x.to(self.device)).values())[-1]

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """E[x | z] in the data range, (B, C, H, W), for top-layer codes z."""
        return self.likelihood.mean(self.decode_logits(z.to(self.device)))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @torch.no_grad()
    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n top-layer codes z ~ p(z), (n, latent_dim); ``generator`` fixes them."""
        return self.prior.sample(n, self.encode_gaussian, generator)

    # the precision of the decoder's pass to the pixels in log_weights: eval's IW estimate sets
    # bf16-mixed for its duration (models/metrics.py); training and everything else run 32-true
    decoding_precision = "32-true"
    in_estimate = False  # True inside ``estimating``

    def nll(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x | z) per image, (B,), as ``log_weight_terms`` computes it: the likelihood's
        ``nll``, inside ``estimating`` in its form for the IW estimate (``estimate_log_prob``)."""
        return self.likelihood.nll(out, x, estimate=self.in_estimate)

    def decoding(self):
        """The context a model runs its decoder to the likelihood's outputs in (``log_weights``),
        and any other network it runs once per draw (two_level.py: its latent layers): bf16
        matrix products under ``decoding_precision=bf16-mixed``; the draws, the likelihood and
        every density (prior, posterior, the latent layers' own) stay float32."""
        if self.decoding_precision == "bf16-mixed":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    @contextmanager
    def estimating(self, precision: str = "32-true") -> Iterator[None]:
        """The context of many ``log_weights`` calls with the weights fixed (eval's IW estimate):
        no gradients, the decoder in ``precision``, and the prior's parts that depend on the
        weights computed once (``Prior.fixed``)."""
        before = self.decoding_precision, self.in_estimate
        self.decoding_precision, self.in_estimate = precision, True
        try:
            with torch.no_grad(), self.prior.fixed(self.encode_gaussian):
                yield
        finally:
            self.decoding_precision, self.in_estimate = before

    def log_weights(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """log p(x, z_i) - log q(z_i | x) for n fresh draws per image, (n, B)."""
        return self.log_weights_from(self.weights_input(x.to(self.device)), n)

    def weights_input(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """What ``log_weights_from`` takes for images x: ``per_image(x)`` where the class's split
        holds (``split_draws``), else ``(x,)``."""
        return self.per_image(x) if self.split_draws else (x,)

    def log_weights_from(self, inputs: tuple[torch.Tensor, ...], n: int) -> torch.Tensor:
        """``log_weights`` from ``weights_input(x)`` (what eval's IW estimate calls per chunk)."""
        if self.split_draws:
            log_px_z, log_ratio = self.log_weight_terms_from(inputs, n)
        else:
            log_px_z, log_ratio = self.log_weight_terms(*inputs, n)
        return log_px_z + log_ratio

    def to_unit_range(self, images: torch.Tensor) -> torch.Tensor:
        lo, scale = self.likelihood.lo.to(images.device), self.likelihood.scale.to(images.device)
        return ((images - lo) / scale).clamp(0, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.losses(x)

    # training ---------------------------------------------------------------------------------
    @property
    def objective_differs(self) -> bool:
        """True when a knob makes the training objective differ from the bound the model is
        named for."""
        return self.hparams.kl_weight != 1.0 or self.hparams.kl_warmup_epochs > 0

    def kl_weight_at(self, epoch: float) -> float:
        """beta at a (fractional) epoch: linear from 0 to kl_weight over kl_warmup_epochs,
        then constant."""
        warmup = self.hparams.kl_warmup_epochs
        return self.hparams.kl_weight * (min(1.0, epoch / warmup) if warmup > 0 else 1.0)

    def configure_model(self) -> None:
        """``compile``: torch.compile the training pass (``losses``);
        state-dict keys stay the same."""
        if self.hparams.compile and self._compiled_losses is None:
            self._compiled_losses = torch.compile(self.losses, mode=self.hparams.compile_mode)

    def logged_terms(self, stage: str) -> tuple[str, ...]:
        return (
            TERMS
            + self.extra_terms
            + ((OBJECTIVE,) if stage == "train" and self.objective_differs else ())
        )

    def _step(self, stage: str, batch, kl_weight: float | None = None) -> dict[str, torch.Tensor]:
        x, _ = batch
        out = (self._compiled_losses or self.losses)(x, kl_weight)
        # weighted by the batch's images: a per-image mean even when the last batch is short
        self.metrics[f"{stage}_terms"].update(out, x.shape[0])
        return out

    def _log_epoch(self, stage: str) -> None:
        """Log each term's epoch mean once (synced across ranks by torchmetrics), then reset it:
        logging once per epoch keeps Lightning's per-step bookkeeping out of the hot path.

        The loggers file them at ``epoch_step`` (Lightning's ``step`` key), where the callbacks put
        the epoch's images and histograms: one x-axis, also after a resume in mid-epoch, and no
        ``epoch`` scalar of Lightning's in front of the losses."""
        metric = self.metrics[f"{stage}_terms"]
        if metric.update_count:
            means = metric.compute()
            for term in self.logged_terms(stage):
                value = means[term]
                self.log(f"{stage}/{term}", value, prog_bar=term == "loss", sync_dist=True)
                if term == "loss" and self.likelihood.discrete:  # the unit papers report
                    bits = bits_per_dim(value, self.input_shape)
                    self.log(f"{stage}/bpd", bits, sync_dist=True)
        metric.reset()
        self.log("step", float(epoch_step(self.trainer)))

    def on_train_epoch_start(self) -> None:
        if self.lr_schedulers() is not None:  # a constant rate is in the run's settings
            lr = self.optimizers().param_groups[0]["lr"]
            self.log("train/lr", float(lr), on_step=False, on_epoch=True)

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def training_step(self, batch, batch_idx):
        beta = self.hparams.kl_weight
        if self.hparams.kl_warmup_epochs > 0:
            beta = self.kl_weight_at(
                self.current_epoch + batch_idx / max(1, self.trainer.num_training_batches)
            )
            self.log("train/kl_weight", beta, on_step=False, on_epoch=True)
        return self._step("train", batch, beta)[OBJECTIVE]

    def validation_step(self, batch, batch_idx):
        """The posterior means of each layer and, where the KL factorizes, the KL per latent dim
        (callbacks read them)."""
        out = self._step("val", batch)
        codes = out.get("codes")
        codes = self.codes(batch[0]) if codes is None else codes
        kl_dims = out.get("kl_dims")
        return {
            "codes": {k: v.detach() for k, v in codes.items()},
            "kl_dims": None if kl_dims is None else kl_dims.detach(),
        }

    def test_step(self, batch, batch_idx):
        self._step("test", batch)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[MODEL_CLASS] = f"{type(self).__module__}.{type(self).__qualname__}"
        if self.run_config is not None:
            checkpoint["run_config"] = self.run_config

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # a run started from a checkpoint keeps the config it was built from (its records and its
        # own checkpoints say what it trains with); a model loaded for eval takes the saved one
        if self.run_config is None:
            self.run_config = checkpoint.get("run_config")

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, *args, **kwargs):
        """Lightning's, returning the class the checkpoint was trained with when that is a subclass
        of ``cls`` (``BaseVAE.load_from_checkpoint(path)`` gives back an IWAE, an HVAE or your own
        model)."""
        if isinstance(checkpoint_path, (str, os.PathLike)):
            peek = torch.load(checkpoint_path, map_location="cpu", weights_only=True, mmap=True)
            target = recorded_class(peek) if isinstance(peek, dict) else None
            if target is not None and target is not cls and issubclass(target, cls):
                return target.load_from_checkpoint(checkpoint_path, *args, **kwargs)
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        # a schedule in optimizer steps
        if "steps_per_epoch" in inspect.signature(self.scheduler_factory).parameters:
            epochs = max(1, self.trainer.max_epochs or 1)
            steps_per_epoch = (
                self.trainer.estimated_stepping_batches / epochs
                if self.trainer.max_epochs != -1
                else 1
            )
            scheduler = self.scheduler_factory(optimizer, steps_per_epoch=steps_per_epoch)
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
            }
        scheduler = self.scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss"},
        }
