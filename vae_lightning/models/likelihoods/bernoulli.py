"""Bernoulli(logits) per pixel: the exact likelihood of binary pixels (``data.binarize=true``, the
papers' dynamically binarized MNIST); on grey levels it is the usual "BCE" loss, not a density.
Was ``model.loss=bce``."""

import torch
from torch.distributions import Bernoulli as BernoulliDistribution

from vae_lightning.models.likelihoods.base import Likelihood


class Bernoulli(Likelihood):
    unit_range = True

    def pixel_log_prob(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return BernoulliDistribution(logits=out, validate_args=False).log_prob(x).sum(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(out.float())
