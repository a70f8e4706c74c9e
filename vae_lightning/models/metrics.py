"""The numbers VAE papers report beyond the ELBO: importance-weighted log p(x) and active units."""

import math
from collections.abc import Callable

import torch
from torch.distributions import Normal

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. (2016): a unit is active when Cov_x(E_q[z_d]) > 0.01


def iw_log_mean_exp(log_weights: Callable[[int], torch.Tensor], k: int, chunk: int) -> torch.Tensor:
    """log (1/k) sum_i exp(w_i) over k weights drawn ``chunk`` at a time, shape (B,).

    ``log_weights(n)`` returns n fresh log-weights per item, shape (n, B). Only one chunk is held in
    memory; the chunks are combined with a running logsumexp, which never overflows.
    """
    total, drawn = None, 0
    while drawn < k:
        n = min(chunk, k - drawn)
        part = torch.logsumexp(log_weights(n), dim=0)
        total = part if total is None else torch.logaddexp(total, part)
        drawn += n
    return total - math.log(k)


def log_weight_terms(
    module, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, n: int, rsample: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p(x | z_i), log p(z_i) - log q(z_i | x)) for n draws z_i ~ q(z | x) per image, each (n, B).

    ``rsample``: reparameterized draws, so gradients flow to the encoder (training on the IW bound).
    """
    q = Normal(mu.float(), (0.5 * logvar.float()).exp())
    z = q.rsample((n,)) if rsample else q.sample((n,))  # (n, B, D)
    b, d = mu.shape
    xs = x.expand(n, *x.shape).reshape(n * b, *x.shape[1:])
    log_px_z = module.log_likelihood(xs, z.reshape(n * b, d)).view(n, b)
    return log_px_z, Normal(0.0, 1.0).log_prob(z).sum(-1) - q.log_prob(z).sum(-1)


def log_weights(module, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, n: int) -> torch.Tensor:
    """log p(x, z_i) - log q(z_i | x) for n draws z_i ~ q(z | x) per image, shape (n, B)."""
    log_px_z, log_prior_ratio = log_weight_terms(module, x, mu, logvar, n)
    return log_px_z + log_prior_ratio


@torch.no_grad()
def iw_log_likelihood(module, x: torch.Tensor, k: int, max_decodes: int = 10_000) -> torch.Tensor:
    """Importance-weighted estimate of log p(x) per image with k samples (k=1: a one-sample ELBO), shape (B,).

    At most ``max_decodes`` decoder passes are batched at once, which bounds the memory.
    """
    mu, logvar = module.encode(x)
    chunk = max(1, max_decodes // len(x))
    return iw_log_mean_exp(lambda n: log_weights(module, x, mu, logvar, n), k, chunk)


def active_units(mu: torch.Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> tuple[int, torch.Tensor]:
    """(number of active units, per-unit variance) from posterior means mu (N, D) over a data set."""
    variance = mu.double().var(dim=0)
    return int((variance > threshold).sum()), variance.float()
