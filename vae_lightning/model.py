"""The VAE itself: an MLP encoder with Gaussian heads and an MLP decoder (plain nn.Module)."""

from collections.abc import Sequence

import torch
from torch import nn

# exp(0.5 * logvar) stays finite and non-zero in fp32 and bf16 within this range.
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers of the given sizes with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """x -> (mu, logvar) -> z = mu + sigma * eps -> decoder logits.

    The decoder returns logits; ``activate`` maps them into the data range
    ``output_range`` with a scaled Sigmoid (plain Sigmoid for pixels in [0, 1]).
    """

    def __init__(
        self,
        input_dim: int = 784,
        hidden_dims: Sequence[int] = (512, 256),
        latent_dim: int = 20,
        output_range: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        super().__init__()
        hidden_dims = list(hidden_dims)
        self.input_dim, self.latent_dim = input_dim, latent_dim
        self.encoder = nn.Sequential(mlp([input_dim, *hidden_dims]), nn.ReLU())
        self.fc_mu = nn.Linear(hidden_dims[-1], latent_dim)
        self.fc_logvar = nn.Linear(hidden_dims[-1], latent_dim)
        self.decoder = mlp([latent_dim, *reversed(hidden_dims), input_dim])
        lo, hi = output_range
        self.register_buffer("out_lo", torch.tensor(float(lo)), persistent=False)
        self.register_buffer("out_scale", torch.tensor(float(hi - lo)), persistent=False)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x.flatten(1))
        return self.fc_mu(h), self.fc_logvar(h).clamp(LOGVAR_MIN, LOGVAR_MAX)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return self.out_lo + self.out_scale * torch.sigmoid(logits)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.activate(self.decode_logits(z))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        return self.decode_logits(self.reparameterize(mu, logvar)), mu, logvar
