"""Posteriors q(z | x): one file each behind ``Posterior`` (base.py), chosen with
``model/posterior=<name>``."""

from vae_lightning.models.posteriors.base import Posterior
from vae_lightning.models.posteriors.gaussian import GaussianPosterior
from vae_lightning.models.posteriors.iaf import IAFPosterior

__all__ = ["Posterior", "GaussianPosterior", "IAFPosterior"]
