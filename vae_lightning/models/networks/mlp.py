"""The tutorial's network: an MLP encoder 784 -> 512 -> 256 with Gaussian heads,
and its mirror as decoder."""

import math
from collections.abc import Sequence

import torch
from torch import nn

from vae_lightning.models.networks.base import VAENet, check_sizes, make_activation


def mlp(sizes: Sequence[int], act: str) -> nn.Sequential:
    """Linear layers of the given sizes with the activation between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(make_activation(act))
    return nn.Sequential(*layers)


class MLPNet(VAENet):
    """Fully connected: flattened pixels -> hidden_dims -> (fc_mu, fc_logvar);
    z -> reversed hidden_dims -> pixels.

    Defaults are the tutorial's (hidden 512, 256, ReLU): 1.08M parameters for 28x28 images and
    latent 20. Works for any image shape (it flattens); ``activation=tanh`` is the IWAE paper's
    choice.
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        latent_dim: int = 20,
        hidden_dims: Sequence[int] = (512, 256),
        activation: str = "relu",
        output_channels: int | None = None,
    ) -> None:
        super().__init__(input_shape, latent_dim, output_channels)
        hidden = check_sizes("hidden_dims", hidden_dims, "[512,256]")
        pixels = math.prod(self.input_shape)
        self.encoder = nn.Sequential(
            mlp([pixels, *hidden], activation), make_activation(activation)
        )
        self.fc_mu = nn.Linear(hidden[-1], latent_dim)
        self.fc_logvar = nn.Linear(hidden[-1], latent_dim)
        outputs = math.prod(self.output_shape)
        self.decoder = mlp([latent_dim, *reversed(hidden), outputs], activation)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x.flatten(1))
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).view(-1, *self.output_shape)
