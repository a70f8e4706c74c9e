"""The network interface: what a VAE network takes and returns, and all the rest of the template
relies on.

A network is a component: ``conf/model/net/<name>.yaml`` names its class with ``_target_`` and lists
its own settings; the model (``models/vae.py``) builds it as
``Net(input_shape=..., latent_dim=..., **settings)``, where ``input_shape`` comes from the data and
``latent_dim`` from ``model.latent_dim``; a likelihood that needs more than one decoder output per
channel (``model/likelihood``: a learned variance, a mixture of logistics) also passes
``output_channels``, the decoder's channels per pixel.

    encode(x)  x: (B, C, H, W) normalized images  ->  (mu, logvar), each (B, latent_dim):
               the mean and log-variance of the Gaussian posterior q(z | x)
    decode(z)  z: (B, latent_dim)  ->  (B, output_channels, H, W) (output_channels = C unless
               given): the decoder output BEFORE the output activation, which belongs to the
               likelihood (``model/likelihood``: a sigmoid for bernoulli, the logistics' means and
               scales for a mixture...). So a network never needs to know the pixel range.

Only the model calls a network. Callbacks, eval, sample and notebooks use the model's methods
(``models/base.py``: ``encode``, ``decode``, ``reconstruct``, ``log_weights``, ``losses``), never
the network's layers. The posterior component (``model/posterior``) draws z from the network's
(mu, logvar).
A network checks its own settings in its constructor and raises
``SettingError(name, value, problem)``; the error then reads ``model.net.<name>=<value> <problem>``
on the command line.
"""

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import nn

from vae_lightning.errors import SettingError, check_int

# exp(0.5 * logvar) stays finite and non-zero in fp32 and bf16 within this range.
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU}


def make_activation(name: str) -> nn.Module:
    """A fresh hidden-layer activation by name (the ``activation`` setting
    of the built-in networks)."""
    if name not in ACTIVATIONS:
        raise SettingError("activation", name, f"is not one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class VAENet(nn.Module, ABC):
    """Base class of the networks: stores and checks the two arguments every network gets.

    Subclasses implement ``encode`` and ``decode`` (see the module docstring for shapes).
    ``forward`` is the whole training pass, x -> (logits, mu, logvar) with z = mu + sigma * eps, so
    that ``model.compile=true`` compiles all of it.
    """

    def __init__(
        self, input_shape: Sequence[int], latent_dim: int, output_channels: int | None = None
    ) -> None:
        super().__init__()
        shape = tuple(input_shape)
        if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
            raise SettingError(
                "input_shape", list(shape), "must be (channels, height, width), e.g. [1, 28, 28]"
            )
        self.input_shape: tuple[int, int, int] = shape  # (C, H, W)
        self.latent_dim: int = check_int("latent_dim", latent_dim, low=1, example=20)
        out = shape[0] if output_channels is None else output_channels
        out = check_int("output_channels", out, low=1, example=shape[0])
        self.output_shape: tuple[int, int, int] = (out, *shape[1:])  # what decode returns

    @abstractmethod
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) -> (mu, logvar), each (B, latent_dim)."""

    @abstractmethod
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) -> (B, output_channels, H, W), before the likelihood's output
        activation."""

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``encode`` with logvar clamped to a range where sigma stays finite and non-zero."""
        mu, logvar = self.encode(x)
        return mu, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.posterior(x)
        return self.decode(self.reparameterize(mu, logvar)), mu, logvar


def check_sizes(name: str, sizes, example: str) -> list[int]:
    """A non-empty list of positive integers (layer widths, channel counts)."""
    values = list(sizes) if isinstance(sizes, Sequence) and not isinstance(sizes, str) else None
    if not values or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values
    ):
        raise SettingError(
            name, sizes, f"must be a non-empty list of positive integers, e.g. {example}"
        )
    return values
