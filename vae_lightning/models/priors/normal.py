"""The standard normal prior N(0, I) (the default): analytic KL per latent dim."""

import torch
from torch.distributions import Normal

from vae_lightning.models.priors.base import Encode, Prior


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Analytic KL(N(mu, exp(logvar)) || N(0, 1)) for every latent dimension, shape (B, D)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


class NormalPrior(Prior):
    def log_prob(self, z: torch.Tensor, encode: Encode | None = None) -> torch.Tensor:
        return Normal(0.0, 1.0, validate_args=False).log_prob(z.float()).sum(-1)

    def sample(
        self, n: int, encode: Encode | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, generator=generator)

    def kl_dims(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return kl_per_dim(mu.float(), logvar.float())
