"""A VAE with several stochastic layers (Burda et al., 2016, Table 1, second architecture:
two layers).

q(z_1 | x) q(z_2 | z_1) ... and p(x | z_1) p(z_1 | z_2) ... p(z_L), every conditional a diagonal
Gaussian (the likelihood for x) given by an MLP with ``hidden_dims[i]`` deterministic units below
stochastic layer i. The paper's: 784-100-100-[z_1: 100]-50-50-[z_2: 50] tanh, decoders mirrored.
p(z_L) is the prior component (``model/prior``), so the VampPrior of Tomczak & Welling (2018) goes
on the top layer. Trained on the ELBO, every KL by Monte Carlo on the same draws; ``hiwae.py``
trains it on the IWAE bound.
"""

import math
from collections.abc import Sequence

import torch
from torch import nn

from vae_lightning.errors import SettingError
from vae_lightning.models.base import BaseVAE
from vae_lightning.models.networks.base import LOGVAR_MAX, LOGVAR_MIN, check_sizes, make_activation
from vae_lightning.models.posteriors.gaussian import gaussian_rsample
from vae_lightning.models.priors.base import gaussian_log_prob
from vae_lightning.models.vae import NORMAL_PRIOR


def mlp(sizes: list[int], activation: str) -> nn.Sequential:
    """Linear layers between consecutive ``sizes``, the activation after each."""
    layers = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b), make_activation(activation)]
    return nn.Sequential(*layers)


class GaussianLayer(nn.Module):
    """in -> hidden MLP -> (mu, logvar) of a diagonal Gaussian over ``out`` units."""

    def __init__(self, inputs: int, hidden: list[int], out: int, activation: str):
        super().__init__()
        self.body = mlp([inputs, *hidden], activation)
        self.mu, self.logvar = nn.Linear(hidden[-1], out), nn.Linear(hidden[-1], out)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(h)
        return self.mu(h), self.logvar(h).clamp(LOGVAR_MIN, LOGVAR_MAX)


class HVAE(BaseVAE):
    def __init__(
        self,
        latent_dims=(100, 50),
        hidden_dims=((100, 100), (50, 50)),
        activation: str = "tanh",
        prior=None,
        **settings,
    ):
        prior = prior or NORMAL_PRIOR
        latent_dims = check_sizes("latent_dims", latent_dims, "[100,50]")
        if (
            not isinstance(hidden_dims, Sequence)
            or isinstance(hidden_dims, str)
            or len(hidden_dims) != len(latent_dims)
        ):
            raise SettingError(
                "hidden_dims",
                hidden_dims,
                f"must give one list of widths per stochastic layer "
                f"({len(latent_dims)} for latent_dims={latent_dims}), e.g. [[100,100],[50,50]]",
            )
        hidden_dims = [check_sizes("hidden_dims", h, "[[100,100],[50,50]]") for h in hidden_dims]
        make_activation(activation)
        super().__init__(**settings)
        self.latent_dims, self.latent_dim = latent_dims, latent_dims[-1]
        # what each stochastic layer is computed from
        below = [math.prod(self.input_shape), *latent_dims[:-1]]
        self.encoders = nn.ModuleList(
            GaussianLayer(i, h, d, activation) for i, h, d in zip(below, hidden_dims, latent_dims)
        )
        self.decoders = nn.ModuleList(  # p(z_l | z_l+1), i = 1..L-1
            GaussianLayer(latent_dims[i + 1], hidden_dims[i + 1][::-1], latent_dims[i], activation)
            for i in range(len(latent_dims) - 1)
        )
        self.output_shape = (self.likelihood.outputs, *self.input_shape[1:])
        self.pixels = nn.Sequential(
            mlp([latent_dims[0], *hidden_dims[0][::-1]], activation),
            nn.Linear(hidden_dims[0][0], math.prod(self.output_shape)),
        )
        self.prior = self.build_prior(prior)

    def codes(self, x):
        h, codes = x.flatten(1), {}
        for i, encoder in enumerate(self.encoders):
            h = encoder(h)[0]
            codes[f"z{i + 1}"] = h
        return codes

    def encode_gaussian(self, x):
        h = x.flatten(1)
        for encoder in self.encoders[:-1]:
            h = encoder(h)[0]
        return self.encoders[-1](h)

    def decode_logits(self, z):
        for decoder in reversed(self.decoders):
            z = decoder(z)[0]
        return self.logits(z)

    def logits(self, z1: torch.Tensor) -> torch.Tensor:
        return self.pixels(z1).view(-1, *self.output_shape)

    @torch.no_grad()
    def reconstruct(self, x):
        """Through the mean of z_1, the layer closest to the pixels."""
        return self.likelihood.mean(self.logits(self.encoders[0](x.to(self.device).flatten(1))[0]))

    def per_image(self, x):
        return (x, *self.encoders[0](x.flatten(1)))

    def log_weight_terms(self, x, n):
        return self.log_weight_terms_from(self.per_image(x), n)

    def log_weight_terms_from(self, per_image, n):
        x, mu, logvar = per_image
        b = len(x)
        z, log_q = gaussian_rsample(mu, logvar, n)  # (n, B, D_1), fp32
        zs = [z]
        for encoder in self.encoders[1:]:  # later layers: one draw per draw of the layer below
            z, lq = gaussian_rsample(*encoder(z), None)
            zs.append(z.float())
            log_q = log_q + lq
        log_p = self.prior.log_prob(zs[-1], self.encode_gaussian)
        for i, decoder in enumerate(self.decoders):
            mu, logvar = decoder(zs[i + 1])
            log_p = log_p + gaussian_log_prob(zs[i], mu.float(), logvar.float())
        xs = x.expand(n, *x.shape).reshape(n * b, *x.shape[1:])
        with self.decoding():
            out = self.logits(zs[0].reshape(n * b, -1))
        log_px_z = -self.nll(out, xs).view(n, b)
        return log_px_z, log_p - log_q
