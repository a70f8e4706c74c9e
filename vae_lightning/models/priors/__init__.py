"""Priors p(z): one file each behind ``Prior`` (base.py), chosen with ``model/prior=<name>``."""

from vae_lightning.models.priors.base import MixturePrior, Prior
from vae_lightning.models.priors.mog import MoGPrior
from vae_lightning.models.priors.normal import NormalPrior
from vae_lightning.models.priors.vamp import VampPrior

__all__ = ["Prior", "MixturePrior", "NormalPrior", "MoGPrior", "VampPrior"]
