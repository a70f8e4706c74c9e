"""Tomczak & Welling's two-level VAE (VampPrior, AISTATS 2018, "HVAE (L = 2)"; their code's
HVAE_2level): the top layer z_2 is inferred first, and both layers reach the pixels.

    q(z_2 | x) q(z_1 | x, z_2)        p(z_2) p(z_1 | z_2) p(x | z_1, z_2)

Every conditional is a diagonal Gaussian (the likelihood for x) computed by gated dense layers
(networks/gated.py) of ``hidden`` units: two below q(z_2 | x) and p(z_1 | z_2); one from each input
and one joint layer for q(z_1 | x, z_2) and p(x | z_1, z_2). Log-variances are clipped to
[logvar_min, logvar_max], every linear layer starts from He's init (the paper's code). p(z_2) is
the prior component (``model/prior``; the paper: the VampPrior, K = 500, on z_2). Trained on the
ELBO, every KL by Monte Carlo on the same draws.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from vae_lightning.errors import SettingError, check_float, check_int
from vae_lightning.models.base import BaseVAE
from vae_lightning.models.networks.base import check_sizes
from vae_lightning.models.networks.gated import GatedDense, gated
from vae_lightning.models.posteriors.gaussian import gaussian_rsample
from vae_lightning.models.priors.base import gaussian_log_prob
from vae_lightning.models.vae import NORMAL_PRIOR


class GaussianHeads(nn.Module):
    """features -> (mu, logvar clipped to ``bounds``) over ``out`` units, both from one matrix
    product (two of ``out`` = 40 columns each ran at a third of the CPU's bf16 rate)."""

    def __init__(self, features: int, out: int, bounds: tuple[float, float]) -> None:
        super().__init__()
        self.mu, self.logvar, self.bounds = (
            nn.Linear(features, out),
            nn.Linear(features, out),
            bounds,
        )

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weight = torch.cat([self.mu.weight, self.logvar.weight])
        bias = torch.cat([self.mu.bias, self.logvar.bias])
        mu, logvar = F.linear(h, weight, bias).chunk(2, -1)
        return mu, logvar.clamp(*self.bounds)


class Joint(nn.Module):
    """Two inputs, one gated layer each, concatenated, then one joint gated layer."""

    def __init__(self, a: int, b: int, hidden: int) -> None:
        super().__init__()
        self.a, self.b = GatedDense(a, hidden), GatedDense(b, hidden)
        self.joint = GatedDense(2 * hidden, hidden)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.joint(torch.cat([self.a(a), self.b(b)], -1))

    def first_share(self, ha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The first input's features' (``ha = self.a(a)``) share of the joint layer's two
        products (float32 where autocast is off: ``per_image`` calls it so); ``given`` adds it to
        the second input's at each of its draws (q(z_1 | x, z_2): x's half once per image, not
        once per draw of z_2)."""
        ha, n = ha.float(), ha.shape[-1]
        return F.linear(ha, self.joint.h.weight[:, :n]), F.linear(ha, self.joint.g.weight[:, :n])

    def given(self, share: tuple[torch.Tensor, torch.Tensor], b: torch.Tensor) -> torch.Tensor:
        """``forward`` from ``share = self.first_share(a)``, broadcast over b's leading dims."""
        hb, n, joint = self.b(b), share[0].shape[-1], self.joint
        h = F.linear(hb, joint.h.weight[:, n:]).float() + share[0]
        g = F.linear(hb, joint.g.weight[:, n:]).float() + share[1]
        return joint.gate(h, g, hb.dtype)


class TwoLevelVAE(BaseVAE):
    def __init__(
        self,
        latent_dims=(40, 40),
        hidden: int = 300,
        logvar_min: float = -6.0,
        logvar_max: float = 2.0,
        prior=None,
        **settings,
    ):
        prior = prior or NORMAL_PRIOR
        latent_dims = check_sizes("latent_dims", latent_dims, "[40,40]")
        if len(latent_dims) != 2:
            raise SettingError(
                "latent_dims", latent_dims, "must give two sizes, z1 and z2, e.g. [40,40]"
            )
        check_int("hidden", hidden, low=1, example=300)
        check_float("logvar_min", logvar_min, example=-6.0)
        if not logvar_min < logvar_max:
            raise SettingError(
                "logvar_min", logvar_min, f"must be below logvar_max ({logvar_max}), e.g. -6"
            )
        super().__init__(**settings)
        (d1, d2), bounds = latent_dims, (float(logvar_min), float(logvar_max))
        self.latent_dims, self.latent_dim = latent_dims, d2
        pixels = math.prod(self.input_shape)
        self.q_z2 = nn.Sequential(
            gated([pixels, hidden, hidden]), GaussianHeads(hidden, d2, bounds)
        )
        self.q_z1 = Joint(pixels, d2, hidden)
        self.q_z1_heads = GaussianHeads(hidden, d1, bounds)
        self.p_z1 = nn.Sequential(gated([d2, hidden, hidden]), GaussianHeads(hidden, d1, bounds))
        self.p_x = Joint(d1, d2, hidden)
        self.output_shape = (self.likelihood.outputs, *self.input_shape[1:])
        self.pixels = nn.Linear(hidden, math.prod(self.output_shape))
        for m in self.modules():  # He's init, N(0, 2 / fan_in), biases as PyTorch starts them
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / m.in_features))
        self.prior = self.build_prior(prior)

    def logits(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """The likelihood's parameters, float32: the bias added after the product (in the
        likelihood's fused kernel under torch.compile, not copied into the product's output)."""
        h = F.linear(self.p_x(z1, z2), self.pixels.weight).float() + self.pixels.bias
        return h.view(-1, *self.output_shape)

    def codes(self, x):
        x = x.flatten(1)
        mu2 = self.q_z2(x)[0]
        return {"z1": self.q_z1_heads(self.q_z1(x, mu2))[0], "z2": mu2}

    def encode_gaussian(self, x):
        return self.q_z2(x.flatten(1))

    def decode_logits(self, z):
        return self.logits(self.p_z1(z)[0], z)

    @torch.no_grad()
    def reconstruct(self, x):
        """Through the posterior means of both layers."""
        codes = self.codes(x.to(self.device))
        return self.likelihood.mean(self.logits(codes["z1"], codes["z2"]))

    def per_image(self, x):
        """The images, q(z_2 | x) and x's share of q(z_1 | x, z_2)'s joint layer."""
        flat = x.flatten(1)
        mu2, logvar2 = self.q_z2(flat)
        with self.decoding():
            features = self.q_z1.a(flat)
        return x, mu2, logvar2, self.q_z1.first_share(features)

    def log_weight_terms(self, x, n):
        return self.log_weight_terms_from(self.per_image(x), n)

    def log_weight_terms_from(self, per_image, n):
        x, mu2, logvar2, share = per_image
        b = len(x)
        z2, log_q = gaussian_rsample(mu2, logvar2, n)  # (n, B, d2), fp32
        # the networks run once per draw of z_2 (half of the matrix products of a draw) go in the
        # decoding precision too; the draw of z_1 and every density stay float32
        with self.decoding():
            mu1_q, logvar1_q = self.q_z1_heads(self.q_z1.given(share, z2))
            mu1, logvar1 = self.p_z1(z2)
        z1, lq1 = gaussian_rsample(mu1_q.float(), logvar1_q.float())  # one per z_2 draw
        log_p = self.prior.log_prob(z2, self.encode_gaussian) + gaussian_log_prob(
            z1, mu1.float(), logvar1.float()
        )
        xs = x.expand(n, *x.shape).reshape(n * b, *x.shape[1:])
        with self.decoding():
            out = self.logits(z1.reshape(n * b, -1), z2.reshape(n * b, -1))
        log_px_z = -self.nll(out, xs).view(n, b)
        return log_px_z, log_p - log_q - lq1
