"""Encoder/decoder networks. Each is one class implementing ``VAENet`` (base.py), chosen by
``model.net._target_``."""

from vae_lightning.models.networks.base import VAENet
from vae_lightning.models.networks.conv import ConvNet
from vae_lightning.models.networks.mlp import MLPNet

__all__ = ["VAENet", "MLPNet", "ConvNet"]
