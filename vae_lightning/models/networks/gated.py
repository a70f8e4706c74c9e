"""Tomczak & Welling's network (VampPrior, AISTATS 2018, and their code): every hidden layer is a
gated dense layer, h = (W x + b) * sigmoid(V x + c), two of 300 units on each side; the encoder's
log-variance head is clipped to [-6, 2], and every linear layer starts from He's normal init."""

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vae_lightning.errors import SettingError
from vae_lightning.models.networks.base import VAENet, check_sizes

INITS = ("he", "default")


class GatedDense(nn.Module):
    """A linear layer whose output is gated, unit by unit, by a sigmoid of a second one. The biases
    and the gate are added and computed in float32 after the two matrix products (under bf16
    autocast too), in one fused kernel under torch.compile: a bias inside the product costs a copy
    of it into each product's output on the CPU (7 % of two_level's IW estimate)."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.h, self.g = nn.Linear(n_in, n_out), nn.Linear(n_in, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(F.linear(x, self.h.weight), F.linear(x, self.g.weight))

    def gate(
        self, h: torch.Tensor, g: torch.Tensor, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """The layer's output from its two products without their biases: the biases and the gate
        in float32, the result in ``dtype`` (by default the products')."""
        gated = (h.float() + self.h.bias) * torch.sigmoid(g.float() + self.g.bias)
        return gated.to(dtype or h.dtype)


def gated(sizes: Sequence[int]) -> nn.Sequential:
    return nn.Sequential(*(GatedDense(a, b) for a, b in zip(sizes[:-1], sizes[1:])))


class GatedMLPNet(VAENet):
    """pixels -> gated hidden_dims -> (fc_mu, fc_logvar in [logvar_min, logvar_max]);
    z -> gated reversed hidden_dims -> pixels. Defaults: the paper's 300, 300 and [-6, 2]."""

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        latent_dim: int = 40,
        hidden_dims: Sequence[int] = (300, 300),
        logvar_min: float = -6.0,
        logvar_max: float = 2.0,
        init: str = "he",
        output_channels: int | None = None,
    ) -> None:
        super().__init__(input_shape, latent_dim, output_channels)
        hidden = check_sizes("hidden_dims", hidden_dims, "[300,300]")
        if not logvar_min < logvar_max:
            raise SettingError(
                "logvar_min", logvar_min, f"must be below logvar_max ({logvar_max}), e.g. -6"
            )
        if init not in INITS:
            raise SettingError("init", init, f"is not one of {', '.join(INITS)}")
        self.logvar_range = (float(logvar_min), float(logvar_max))
        self.encoder = gated([math.prod(self.input_shape), *hidden])
        self.fc_mu = nn.Linear(hidden[-1], latent_dim)
        self.fc_logvar = nn.Linear(hidden[-1], latent_dim)
        self.decoder = nn.Sequential(
            gated([latent_dim, *reversed(hidden)]),
            nn.Linear(hidden[0], math.prod(self.output_shape)),
        )
        if init == "he":  # N(0, 2 / fan_in) weights, biases as PyTorch starts them
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / m.in_features))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x.flatten(1))
        return self.fc_mu(h), self.fc_logvar(h).clamp(*self.logvar_range)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).view(-1, *self.output_shape)
