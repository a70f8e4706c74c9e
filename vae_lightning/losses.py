"""Per-sample loss terms in nats: reconstruction negative log-likelihood and KL to N(0, I)."""

from collections.abc import Callable

import torch
import torch.nn.functional as F

LOSSES = ("bce", "mse")


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Analytic KL(N(mu, exp(logvar)) || N(0, 1)) for every latent dimension, shape (B, D)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def reconstruction(
    loss: str, logits: torch.Tensor, x: torch.Tensor, activate: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Reconstruction term summed over pixels, one value per sample, shape (B,).

    ``bce``: Bernoulli negative log-likelihood on the decoder logits (targets must lie in [0, 1]).
    ``mse``: squared error of ``activate(logits)`` (the decoder output in the data range), i.e. a Gaussian NLL with variance 1/2
    without its constant; it is not a normalized density, so its nats are not comparable to bce's.
    """
    x = x.flatten(1)
    if loss == "bce":
        return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)
    if loss == "mse":
        return (activate(logits) - x).pow(2).sum(1)
    raise ValueError(f"model.loss={loss!r} is not one of {LOSSES}")
