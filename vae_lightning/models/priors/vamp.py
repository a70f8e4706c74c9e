"""The VampPrior (Tomczak & Welling, 2018): p(z) = (1/K) sum_k q(z | u_k), a mixture of the model's
own posteriors at K learnable pseudo-inputs u_k (K = 500 in the paper).

As in the paper's code, the pseudo-inputs are images in the data range (a hard tanh keeps them
there), initialized around ``init_mean`` (0.05 of the range) with ``init_std`` (0.01). Each step
encodes the K pseudo-inputs once.
"""

import torch
from torch import nn

from vae_lightning.errors import check_float, check_int
from vae_lightning.models.priors.base import Encode, MixturePrior


class VampPrior(MixturePrior):
    def __init__(
        self, components: int = 500, init_mean: float = 0.05, init_std: float = 0.01, **context
    ):
        super().__init__(**context)
        check_int("components", components, low=1, example=500)
        check_float(
            "init_mean", init_mean, low=0, example=0.05, note=" (a fraction of the pixel range)"
        )
        check_float("init_std", init_std, low=0, example=0.01)
        lo, hi = (
            torch.tensor([float(v) for v in bound]).view(-1, 1, 1) for bound in self.data_range
        )
        self.register_buffer("lo", lo, persistent=False)
        self.register_buffer("hi", hi, persistent=False)
        unit = init_mean + init_std * torch.randn(components, *self.input_shape)
        self.pseudo_inputs = nn.Parameter(lo + (hi - lo) * unit)

    def inputs(self) -> torch.Tensor:
        """The K pseudo-inputs, clipped to the data range (the paper's hard tanh), (K, C, H, W)."""
        return torch.maximum(torch.minimum(self.pseudo_inputs, self.hi), self.lo)

    def components(self, encode: Encode):
        mu, logvar = encode(self.inputs())
        return torch.zeros(len(mu), device=mu.device), mu, logvar
