"""Inverse autoregressive flow on top of the Gaussian posterior (Kingma et al., 2016).

z_0 = mu + sigma * eps, then ``steps`` times: [m, s] = MADE(z, h), sigma_t = sigmoid(s),
z = sigma_t * z + (1 - sigma_t) * m, with the order of z reversed between steps.
log q(z | x) = log N(z_0; mu, sigma) - sum_t sum_d log sigma_t. The context h is computed from the
posterior's (mu, logvar), so the flow depends on x. The gates start near the identity (s is offset
by +``gate_bias``, the paper's "forget gate bias"); ``steps=0`` is the Gaussian.
"""

import torch
from torch import nn
from torch.nn import functional as F

from vae_lightning.errors import check_float, check_int
from vae_lightning.models.posteriors.base import Posterior
from vae_lightning.models.posteriors.gaussian import gaussian_rsample


class MaskedLinear(nn.Linear):
    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor):
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADEStep(nn.Module):
    """One autoregressive step: output d depends on z_<d (and the context) only
    (Germain et al., 2015)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        inputs = torch.arange(1, dim + 1)
        hiddens = torch.arange(hidden) % max(1, dim - 1) + 1
        self.inp = MaskedLinear(dim, hidden, hiddens[:, None] >= inputs[None, :])
        self.out = MaskedLinear(hidden, 2 * dim, (inputs.repeat(2)[:, None] > hiddens[None, :]))
        self.context = nn.Linear(hidden, hidden)

    def forward(self, z: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m, s = self.out(F.elu(self.inp(z) + self.context(h))).chunk(2, dim=-1)
        return m, s


class IAFPosterior(Posterior):
    def __init__(
        self, latent_dim: int, steps: int = 2, hidden_dim: int = 128, gate_bias: float = 1.0
    ):
        super().__init__(latent_dim)
        check_int("steps", steps, low=0, example=2, note=" (0 = the Gaussian posterior)")
        check_int("hidden_dim", hidden_dim, low=1, example=128)
        self.gate_bias = check_float("gate_bias", gate_bias, example=1.0)
        self.embed = nn.Linear(2 * latent_dim, hidden_dim)
        self.flow = nn.ModuleList(MADEStep(latent_dim, hidden_dim) for _ in range(steps))

    def transform(
        self, z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_T, sum_t sum_d log sigma_t) for z_0 of shape (..., B, D)."""
        z, log_det = z.float(), torch.zeros(z.shape[:-1], device=z.device)
        if not self.flow:
            return z, log_det
        h = F.elu(self.embed(torch.cat([mu, logvar], dim=-1).float()))
        for i, step in enumerate(self.flow):
            if i:
                z = z.flip(-1)
            m, s = step(z, h)
            gate = torch.sigmoid(s.float() + self.gate_bias)
            z = gate * z + (1 - gate) * m.float()
            log_det = log_det + F.logsigmoid(s.float() + self.gate_bias).sum(-1)
        return z, log_det

    def rsample(self, mu, logvar, n=None):
        z0, log_q0 = gaussian_rsample(mu, logvar, n)
        z, log_det = self.transform(z0, mu, logvar)
        return z, log_q0 - log_det

    def mean(self, mu, logvar):
        return self.transform(mu, mu, logvar)[0]
