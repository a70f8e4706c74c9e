"""A small convolutional VAE network for 28x28 (MNIST-like) and 32x32 (CIFAR-like) images, any
channel count.

Encoder: one 4x4 stride-2 convolution per entry of ``channels`` (each halves height and width), then
a dense layer of ``hidden_dim`` units and the Gaussian heads. Decoder: the mirror image, with
transposed convolutions. With the defaults (channels 32, 64; hidden 256; latent 20) a 28x28x1 image
goes 28 -> 14 -> 7 (64 x 7 x 7 features) -> 256 -> z, about 1.7M parameters; on 32x32x3 images
32 -> 16 -> 8.
"""

import math
from collections.abc import Sequence

import torch
from torch import nn

from vae_lightning.errors import SettingError, check_int
from vae_lightning.models.networks.base import VAENet, check_sizes, make_activation


class ConvNet(VAENet):
    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        latent_dim: int = 20,
        channels: Sequence[int] = (32, 64),
        hidden_dim: int = 256,
        activation: str = "relu",
        output_channels: int | None = None,
    ) -> None:
        super().__init__(input_shape, latent_dim, output_channels)
        channels = check_sizes("channels", channels, "[32,64]")
        hidden_dim = check_int("hidden_dim", hidden_dim, low=1, example=256)
        make_activation(activation)  # refuse an unknown name before building anything
        c, h, w = self.input_shape
        factor = 2 ** len(channels)
        if h % factor or w % factor:
            raise SettingError(
                "channels",
                channels,
                f"halves the {h}x{w} images {len(channels)} times, but {h}x{w} does not divide "
                f"by {factor}: use fewer layers (e.g. [32,64] for 28x28) or resize the images",
            )
        self.feature_shape = (channels[-1], h // factor, w // factor)
        features = math.prod(self.feature_shape)

        down: list[nn.Module] = []
        for c_in, c_out in zip([c, *channels[:-1]], channels):
            down += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), make_activation(activation)]
        self.encoder = nn.Sequential(
            *down, nn.Flatten(), nn.Linear(features, hidden_dim), make_activation(activation)
        )
        self.fc_mu = nn.Linear(hidden_dim, latent_dim)
        self.fc_logvar = nn.Linear(hidden_dim, latent_dim)

        up: list[nn.Module] = [
            nn.Linear(latent_dim, hidden_dim),
            make_activation(activation),
            nn.Linear(hidden_dim, features),
            make_activation(activation),
            nn.Unflatten(1, self.feature_shape),
        ]
        widths = list(reversed(channels))
        for i, (c_in, c_out) in enumerate(zip(widths, [*widths[1:], self.output_shape[0]])):
            up.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1))
            if i < len(widths) - 1:
                up.append(make_activation(activation))
        self.decoder = nn.Sequential(*up)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)
