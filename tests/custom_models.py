"""A model and a prior written the way a researcher forking the template would: one file, selected
from the command line with ``model._target_=tests.custom_models.BetaTCVAE`` or
``model.prior._target_=tests.custom_models.LaplacePrior`` and nothing else edited
(tests/test_model_family.py)."""

import math

import torch

from vae_lightning.errors import check_float
from vae_lightning.models import VAE
from vae_lightning.models.priors import Prior


class BetaTCVAE(VAE):
    """beta-TCVAE (Chen et al., 2018): the KL split into index-code mutual information, total
    correlation and dimension-wise KL, with the total correlation weighted by ``tc_weight``; q(z) by
    minibatch weighted sampling. ``__init__(*args, **kwargs)`` as forks usually write it: the
    checkpoint still rebuilds it."""

    extra_terms = ("tc",)

    def __init__(self, *args, tc_weight: float = 6.0, dataset_size: int = 60_000, **kwargs):
        super().__init__(*args, **kwargs)
        check_float("tc_weight", tc_weight, low=0, example=6.0)
        self.tc_weight, self.dataset_size = tc_weight, dataset_size

    def losses(self, x, kl_weight=None):
        out = super().losses(x, kl_weight)
        mu, logvar = self.net.posterior(x)
        z, log_qz_x = self.posterior.rsample(mu, logvar)
        z, mu, logvar = z.float(), mu.float(), logvar.float()
        # log q(z_i | x_j) per dim, (B, B, D)
        pair = -0.5 * (
            (z[:, None] - mu[None]).pow(2) * torch.exp(-logvar[None])
            + logvar[None]
            + math.log(2 * math.pi)
        )
        norm = math.log(len(x) * self.dataset_size)
        log_qz = torch.logsumexp(pair.sum(2), dim=1) - norm
        log_prod_qz = (torch.logsumexp(pair, dim=1) - norm).sum(1)
        tc = (log_qz - log_prod_qz).mean()
        out.update(tc=tc, objective=out["objective"] + (self.tc_weight - 1.0) * tc)
        return out


class LaplacePrior(Prior):
    """p(z) = prod_d Laplace(z_d; 0, scale): heavier tails than the standard normal,
    no analytic KL."""

    def __init__(self, scale: float = 1.0, **context):
        super().__init__(**context)
        self.scale = check_float("scale", scale, low=0, low_ok=False, example=1.0)

    def log_prob(self, z, encode=None):
        return (-z.float().abs() / self.scale - math.log(2 * self.scale)).sum(-1)

    def sample(self, n, encode=None, generator=None):
        u = torch.rand(n, self.latent_dim, generator=generator) - 0.5
        return -self.scale * u.sign() * torch.log1p(-2 * u.abs())
