"""A network written the way a user of the template would: one file, selected from the command line
with ``model.net._target_=tests.custom_net.ResidualMLPNet`` and nothing else edited
(tests/test_open_components.py).

It takes the MLP's settings (hidden_dims, activation), so the default ``model.net`` config fits it
as it is.
"""

import math

import torch
from torch import nn

from vae_lightning.errors import SettingError
from vae_lightning.models.networks import VAENet
from vae_lightning.models.networks.base import make_activation


class ResidualMLPNet(VAENet):
    """Pixels -> width -> (LayerNorm, activation, Linear) blocks with skip connections
    -> Gaussian heads."""

    def __init__(
        self, input_shape=(1, 28, 28), latent_dim=20, hidden_dims=(256,), activation="relu"
    ) -> None:
        super().__init__(input_shape, latent_dim)
        if len(set(hidden_dims)) != 1:
            raise SettingError(
                "hidden_dims",
                list(hidden_dims),
                "must repeat one width (residual blocks), e.g. [128,128]",
            )
        width, depth, pixels = hidden_dims[0], len(hidden_dims), math.prod(self.input_shape)

        def blocks() -> nn.ModuleList:
            return nn.ModuleList(
                nn.Sequential(
                    nn.LayerNorm(width), make_activation(activation), nn.Linear(width, width)
                )
                for _ in range(depth)
            )

        self.embed, self.down = nn.Linear(pixels, width), blocks()
        self.heads = nn.Linear(width, 2 * latent_dim)
        self.lift, self.up, self.out = (
            nn.Linear(latent_dim, width),
            blocks(),
            nn.Linear(width, pixels),
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.embed(x.flatten(1))
        for block in self.down:
            h = h + block(h)
        mu, logvar = self.heads(h).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.lift(z)
        for block in self.up:
            h = h + block(h)
        return self.out(h).view(-1, *self.input_shape)
