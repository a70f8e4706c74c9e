"""A learnable mixture of Gaussians prior: K components with their own
weights, means and variances."""

import torch
from torch import nn

from vae_lightning.errors import check_float, check_int
from vae_lightning.models.priors.base import Encode, MixturePrior


class MoGPrior(MixturePrior):
    """``components`` Gaussians; means start at N(0, init_scale^2), variances at 1, weights equal.
    With one component and ``init_scale=0`` it starts as the standard normal."""

    def __init__(self, components: int = 10, init_scale: float = 1.0, **context):
        super().__init__(**context)
        check_int("components", components, low=1, example=10)
        check_float("init_scale", init_scale, low=0, example=1.0)
        self.means = nn.Parameter(init_scale * torch.randn(components, self.latent_dim))
        self.logvars = nn.Parameter(torch.zeros(components, self.latent_dim))
        self.logits = nn.Parameter(torch.zeros(components))

    def components(self, encode: Encode | None = None):
        return self.logits, self.means, self.logvars.clamp(-30.0, 20.0)
