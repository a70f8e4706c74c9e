"""Normal(lo + (hi - lo) * sigmoid(out), ``variance``) per pixel: a Gaussian density with a fixed
variance (1/2 by default) on pixels in any range [lo, hi] (per channel), normalizer included. Was
``model.loss=mse`` (with variance 1/2 the loss is the squared error plus a constant)."""

import math

import torch
from torch.distributions import Normal

from vae_lightning.errors import check_float
from vae_lightning.models.likelihoods.base import Likelihood


class Gaussian(Likelihood):
    def __init__(self, variance: float = 0.5, **data) -> None:
        super().__init__(**data)
        self.variance = check_float("variance", variance, low=0, low_ok=False, example=0.5)

    def pixel_log_prob(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        normal = Normal(self.mean(out), math.sqrt(self.variance), validate_args=False)
        return normal.log_prob(x).sum(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return self.from_unit(torch.sigmoid(out.float()))
