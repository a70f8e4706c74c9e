"""The models: one file per model behind ``BaseVAE`` (base.py), chosen with ``model=<name>``; their
parts are components too: networks/, priors/, posteriors/, and the likelihood; metrics.py holds the
bounds they are judged by."""

from vae_lightning.models.base import BaseVAE
from vae_lightning.models.hiwae import HIWAE
from vae_lightning.models.hvae import HVAE
from vae_lightning.models.iwae import IWAE
from vae_lightning.models.vae import VAE

__all__ = ["BaseVAE", "VAE", "IWAE", "HVAE", "HIWAE"]
