"""The diagonal Gaussian posterior N(mu, diag exp(logvar)) (the default): z = mu + sigma * eps."""

import torch
from torch.distributions import Normal

from vae_lightning.models.posteriors.base import Posterior


def gaussian_rsample(
    mu: torch.Tensor, logvar: torch.Tensor, n: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One draw per image in the network's precision (n=None), or n draws in fp32,
    with log q(z | x)."""
    # NaN is the divergence guard's
    q = Normal(mu.float(), (0.5 * logvar.float()).exp(), validate_args=False)
    if n is None:
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return z, q.log_prob(z.float()).sum(-1)
    z = q.rsample((n,))
    return z, q.log_prob(z).sum(-1)


class GaussianPosterior(Posterior):
    gaussian = True

    def rsample(self, mu, logvar, n=None):
        return gaussian_rsample(mu, logvar, n)

    def mean(self, mu, logvar):
        return mu
