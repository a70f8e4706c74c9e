"""The posterior interface: q(z | x) built on the network's Gaussian (mu, logvar), a component
chosen with ``model/posterior=<name>``, built as ``Posterior(latent_dim=..., **its settings)``.

    rsample(mu, logvar, n=None)  reparameterized draws and their log q(z | x) in nats:
                                 n=None: z (B, D), log_q (B,); n: z (n, B, D), log_q (n, B)
    mean(mu, logvar)             (B, D): the code that stands for x (eval, sample, the projector)
    gaussian                     True when q is exactly N(mu, diag exp(logvar)),
                                 so an analytic KL applies
"""

import torch
from torch import nn

from vae_lightning.errors import check_int


class Posterior(nn.Module):
    gaussian = False

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = check_int("latent_dim", latent_dim, low=1, example=20)

    def rsample(
        self, mu: torch.Tensor, logvar: torch.Tensor, n: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def mean(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
