"""Per-sample loss terms in nats: reconstruction negative log-likelihood and KL to N(0, I).

Which reconstruction terms give comparable nats (see the README):
``bce`` is the exact Bernoulli likelihood of binary pixels (use ``data.binarize=true``);
``cb`` is the continuous Bernoulli density of grey levels in [0, 1];
``mse`` is a Gaussian density with fixed variance 1/2 on the (normalized) pixel values.
"""

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.distributions import ContinuousBernoulli

LOSSES = ("bce", "cb", "mse")
UNIT_RANGE_LOSSES = ("bce", "cb")  # likelihoods defined on pixels in [0, 1]
MSE_VARIANCE = 0.5  # mse = (x - m)^2 / (2 * 0.5) + 0.5 * log(2 * pi * 0.5) per pixel


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Analytic KL(N(mu, exp(logvar)) || N(0, 1)) for every latent dimension, shape (B, D)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def cb_log_norm(logits: torch.Tensor) -> torch.Tensor:
    """log C(lambda) of the continuous Bernoulli, lambda = sigmoid(logits): the term BCE drops.

    The density is C(lambda) * lambda^x * (1 - lambda)^(1 - x) on [0, 1] (torch's own formula,
    Taylor-expanded near lambda = 1/2 where the closed form 2 artanh(1 - 2 lambda) / (1 - 2 lambda) is 0/0).
    """
    return ContinuousBernoulli(logits=logits, validate_args=False)._cont_bern_log_norm()


def reconstruction(
    loss: str, logits: torch.Tensor, x: torch.Tensor, activate: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Negative log-likelihood -log p(x | z) summed over pixels, one value per sample, shape (B,).

    ``bce``: Bernoulli on the decoder logits (targets in [0, 1]; a proper likelihood only for binary pixels).
    ``cb``: continuous Bernoulli on the logits, i.e. bce minus the log-normalizer: a density on [0, 1].
    ``mse``: Gaussian with variance 1/2 around ``activate(logits)``, normalizer included.
    """
    x = x.flatten(1)
    if loss == "bce":
        return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)
    if loss == "cb":
        bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
        return (bce - cb_log_norm(logits)).sum(1)
    if loss == "mse":
        const = 0.5 * math.log(2 * math.pi * MSE_VARIANCE)
        return ((activate(logits) - x).pow(2) / (2 * MSE_VARIANCE) + const).sum(1)
    raise ValueError(f"model.loss={loss!r} is not one of {LOSSES}")


def likelihood_mean(
    loss: str, logits: torch.Tensor, activate: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """E[x | z] under the likelihood: what samples and reconstructions show.

    For ``cb`` this is the distribution's mean, not lambda = sigmoid(logits) (they differ except at 1/2).
    """
    if loss == "cb":
        return ContinuousBernoulli(logits=logits, validate_args=False).mean
    return activate(logits)
