"""The prior interface: p(z) over the (top) latent layer, a component chosen with
``model/prior=<name>``.

A prior is built as ``Prior(latent_dim=..., input_shape=..., data_range=..., **its settings)``; the
model adds the three. Its methods take ``encode``, the model's map from images (B, C, H, W) to the
Gaussian posterior (mu, logvar) of that layer, which a prior built from the posterior
(the VampPrior) needs and others ignore.

    log_prob(z, encode)          z (..., D) -> (...): log p(z) in nats
    sample(n, encode, generator) -> (n, D)
    kl_dims(mu, logvar)          (B, D) analytic KL(N(mu, exp(logvar)) || p) per latent dim, or None
                                 when p has none (the model then uses the Monte Carlo estimate
                                 log q(z|x) - log p(z))
    fixed(encode)                a context in which log_prob may reuse what it computes from the
                                 model's weights (eval's IW estimate: thousands of calls, no
                                 training step between them); by default it changes nothing
"""

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from vae_lightning.errors import check_int
from vae_lightning.models.numerics import logsumexp

Encode = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
LOG_2PI = math.log(2 * math.pi)


class Prior(nn.Module):
    def __init__(
        self,
        latent_dim: int,
        input_shape: Sequence[int] = (1, 28, 28),
        data_range: Sequence = ((0.0,), (1.0,)),
    ):
        super().__init__()
        self.latent_dim = check_int("latent_dim", latent_dim, low=1, example=20)
        self.input_shape, self.data_range = tuple(input_shape), data_range

    def log_prob(self, z: torch.Tensor, encode: Encode) -> torch.Tensor:
        raise NotImplementedError

    def sample(
        self, n: int, encode: Encode, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        raise NotImplementedError

    def kl_dims(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor | None:
        return None

    @contextmanager
    def fixed(self, encode: Encode) -> Iterator[None]:
        yield


def gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag exp(logvar)) summed over the last dim."""
    return -0.5 * ((z - mu).pow(2) * torch.exp(-logvar) + logvar + LOG_2PI).sum(-1)


class MixturePrior(Prior):
    """A mixture of K diagonal Gaussians; subclasses give
    ``components(encode) -> (logits (K,), mu (K, D), logvar (K, D))``. log p(z) is computed with
    matrix products (no (N, K, D) tensor), so it scales to K = 500 components over the thousands of
    draws of an importance-weighted estimate."""

    _fixed: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def components(self, encode: Encode) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @contextmanager
    def fixed(self, encode: Encode) -> Iterator[None]:
        """The components computed once for every log_prob inside (the VampPrior encodes its
        500 pseudo-inputs once instead of once per chunk of draws)."""
        if self._fixed is not None:  # already inside
            yield
            return
        with torch.no_grad():
            self._fixed = tuple(t.float() for t in self.components(encode))
        try:
            yield
        finally:
            self._fixed = None

    def log_prob(self, z: torch.Tensor, encode: Encode) -> torch.Tensor:
        logits, mu, logvar = self._fixed or (t.float() for t in self.components(encode))
        # float32 under any autocast (bf16-mixed training): in bf16 the products below cancel to
        # errors of nats per draw, which training learns to exploit (a two-level VampPrior model's
        # bf16 -ELBO fell to 49 nats where float32 said 101)
        with torch.autocast(z.device.type, enabled=False):
            flat = z.float().reshape(-1, z.shape[-1])  # (N, D)
            precision = torch.exp(-logvar)  # (K, D)
            # sum_d (z_d - mu_kd)^2 / var_kd  =  z^2 . prec_k  -  2 z . (mu_k prec_k)
            #                                 +  sum_d mu_kd^2 prec_kd
            quadratic = (
                flat.pow(2) @ precision.T
                - 2 * flat @ (mu * precision).T
                + (mu.pow(2) * precision).sum(1)
            )
            # (N, K)
            log_normal = -0.5 * (quadratic.clamp(min=0) + logvar.sum(1) + z.shape[-1] * LOG_2PI)
            log_p = logsumexp(log_normal + torch.log_softmax(logits, 0), dim=1)
        return log_p.reshape(z.shape[:-1])

    def sample(
        self, n: int, encode: Encode, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        logits, mu, logvar = (t.float().cpu() for t in self.components(encode))
        k = torch.multinomial(torch.softmax(logits, 0), n, replacement=True, generator=generator)
        eps = torch.randn(n, mu.shape[1], generator=generator)
        return mu[k] + torch.exp(0.5 * logvar[k]) * eps
