"""ContinuousBernoulli(logits) per pixel (Loaiza-Ganem & Cunningham, 2019): a proper density on
grey levels in [0, 1]; its mean, not sigmoid(logits), is what images show. Was ``model.loss=cb``."""

import torch
from torch.distributions import ContinuousBernoulli as ContinuousBernoulliDistribution

from vae_lightning.models.likelihoods.base import Likelihood


class ContinuousBernoulli(Likelihood):
    unit_range = True

    def distribution(self, out: torch.Tensor) -> ContinuousBernoulliDistribution:
        return ContinuousBernoulliDistribution(logits=out.float(), validate_args=False)

    def pixel_log_prob(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.distribution(out).log_prob(x).sum(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return self.distribution(out).mean
