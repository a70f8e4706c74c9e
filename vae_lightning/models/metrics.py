"""The numbers VAE papers report beyond the ELBO: importance-weighted log p(x) and active units.
Both use only the model interface (``BaseVAE.log_weights`` and ``codes``), so any model of the
family is measured the same way."""

import math
from collections.abc import Callable

import torch

from vae_lightning.models.numerics import logsumexp

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. (2016): a unit is active when Cov_x(E_q[z_d]) > 0.01


def iw_log_mean_exp(
    log_weights: Callable[[int], torch.Tensor], k: int, chunk: int, whole_chunks: bool = False
) -> torch.Tensor:
    """log (1/k) sum_i exp(w_i) over k weights drawn ``chunk`` at a time, shape (B,).

    ``log_weights(n)`` returns n fresh log-weights per item, shape (n, B). Only one chunk is held in
    memory; the chunks are combined with a running logsumexp, which never overflows.
    ``whole_chunks``: the last chunk is drawn whole too and cut to what is left (a compiled
    ``log_weights`` then sees one shape).
    """
    total, drawn = None, 0
    while drawn < k:
        n = min(chunk, k - drawn)
        weights = log_weights(chunk)[:n] if whole_chunks else log_weights(n)
        part = logsumexp(weights, dim=0)
        total = part if total is None else torch.logaddexp(total, part)
        drawn += n
    return total - math.log(k)


PRECISIONS = ("32-true", "bf16-mixed")
# eval.compile=auto compiles the IW pass from this many decoder passes (images x k) on: a compile
# takes 2-20 s on the 2-core CPU here and then saves 2-5 microseconds per pass (README, Evaluation)
COMPILE_FROM = 5_000_000


def compiled_log_weights(model) -> Callable[[tuple, int], torch.Tensor]:
    """``model.log_weights_from`` under torch.compile (inductor): the pass's elementwise work fused
    around the matrix products. ``fallback_random`` keeps torch's own random numbers, so the
    estimate takes the same draws as without compiling and differs by arithmetic alone. Call it
    inside ``model.estimating`` (what it reads stays fixed there)."""
    return torch.compile(model.log_weights_from, dynamic=False, options={"fallback_random": True})


@torch.no_grad()
def iw_log_likelihood(
    model,
    x: torch.Tensor,
    k: int,
    max_decodes: int = 2500,
    precision: str = "32-true",
    log_weights: Callable[[tuple, int], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Importance-weighted estimate of log p(x) per image with k samples (k=1: a one-sample ELBO),
    shape (B,): log (1/k) sum_i p(x, z_i) / q(z_i | x) from ``model.log_weights_from`` (or
    ``log_weights``, e.g. ``compiled_log_weights(model)``) on ``model.weights_input(x)``,
    computed once. At most ``max_decodes`` decoder passes are batched at once, which bounds the
    memory. ``precision`` bf16-mixed runs the decoder's matrix products in bf16
    (``BaseVAE.decoding``): the likelihood, the densities and the log-mean-exp stay float32, and
    the estimate moves by < 0.05 nats (README, Evaluation)."""
    chunk = max(1, max_decodes // len(x))
    with model.estimating(precision):
        inputs = model.weights_input(x.to(model.device))
        if log_weights is None:
            return iw_log_mean_exp(lambda n: model.log_weights_from(inputs, n), k, chunk)
        return iw_log_mean_exp(lambda n: log_weights(inputs, n), k, chunk, whole_chunks=True)


def active_units(
    mu: torch.Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD
) -> tuple[int, torch.Tensor]:
    """(number of active units, per-unit variance) from posterior means mu (N, D)
    over a data set."""
    variance = mu.double().var(dim=0)
    return int((variance > threshold).sum()), variance.float()
