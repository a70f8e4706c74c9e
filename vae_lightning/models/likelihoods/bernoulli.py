"""Bernoulli(logits) per pixel: the exact likelihood of binary pixels (``data.binarize=true``, the
papers' dynamically binarized MNIST); on grey levels it is the usual "BCE" loss, not a density.
Was ``model.loss=bce``."""

import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli as BernoulliDistribution

from vae_lightning.models.likelihoods.base import Likelihood

# eval's sum over pixels multiplies this many factors in (1, 2] before one log: at most 2^16
BLOCK = 16


class Bernoulli(Likelihood):
    unit_range = True

    def pixel_log_prob(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return BernoulliDistribution(logits=out, validate_args=False).log_prob(x).sum(1)

    def estimate_log_prob(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """sum_i x_i l_i - softplus(l_i), with softplus(l) = max(l, 0) + log(1 + exp(-|l|)) and
        the logs of 16 pixels taken as the log of their product: one exp per pixel and one log
        per 16 (torch's form: one exp and one log per pixel). Each product is at most 2^16 (no
        overflow); its float32 rounding moves a block by < 1e-6 nats."""
        out, x = out.flatten(1), x.flatten(1)
        factors = 1 + torch.exp(-out.abs())  # (N, pixels), each in (1, 2]
        factors = F.pad(factors, (0, -out.shape[1] % BLOCK), value=1.0)
        logs = factors.view(len(out), -1, BLOCK).prod(-1).log().sum(1)
        return (x * out - out.clamp(min=0)).sum(1) - logs

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(out.float())
