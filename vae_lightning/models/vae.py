"""The VAE (Kingma & Welling, 2014) trained on the ELBO: one stochastic layer, whose network
(``model/net``), prior (``model/prior``) and posterior (``model/posterior``) are components.

loss = recon + KL, with the KL analytic when the posterior is the Gaussian and the prior has a
closed form (the standard normal), else the Monte Carlo estimate log q(z | x) - log p(z) on the same
draw as recon. The gradient follows recon + beta_t * sum_d max(KL_d, free_bits) (free bits need the
analytic KL per dim).
"""

from collections.abc import Mapping

import torch

from vae_lightning.errors import SettingError, accepted_settings, check_float, check_int
from vae_lightning.models.base import BaseVAE
from vae_lightning.models.components import build, load_class
from vae_lightning.models.networks.base import VAENet
from vae_lightning.models.posteriors.base import Posterior
from vae_lightning.models.priors.base import Prior

DEFAULT_NET = {"_target_": "vae_lightning.models.networks.MLPNet", "hidden_dims": [512, 256]}
NORMAL_PRIOR = {"_target_": "vae_lightning.models.priors.NormalPrior"}
GAUSSIAN_POSTERIOR = {"_target_": "vae_lightning.models.posteriors.GaussianPosterior"}


def decoder_outputs(net, likelihood) -> dict:
    """``output_channels`` for the network when the likelihood needs other than one decoder output
    per image channel; a network class that cannot take it is refused in one line."""
    if likelihood.outputs == likelihood.input_shape[0]:
        return {}
    if isinstance(net, Mapping) and "_target_" in net:
        cls = load_class(net["_target_"], "net", VAENet, "network")
        accepted = accepted_settings(cls)
        if accepted is not None and "output_channels" not in accepted:
            raise SettingError(
                "net._target_",
                net["_target_"],
                f"decodes one output per image channel, but model/likelihood={likelihood.option} "
                f"needs {likelihood.outputs} per pixel: give the network's __init__ an "
                "output_channels argument (as models/networks/mlp.py does)",
                plain=True,
            )
    return {"output_channels": likelihood.outputs}


class VAE(BaseVAE):
    def __init__(
        self,
        net=None,
        prior=None,
        posterior=None,
        latent_dim: int = 20,
        free_bits: float = 0.0,
        **settings,
    ):
        check_int("latent_dim", latent_dim, low=1, example=20)
        check_float(
            "free_bits", free_bits, low=0, example=0.5, note=" nats per latent dim (0 = off)"
        )
        net, prior, posterior = (
            net or DEFAULT_NET,
            prior or NORMAL_PRIOR,
            posterior or GAUSSIAN_POSTERIOR,
        )
        super().__init__(**settings)
        self.latent_dim = latent_dim
        shape, data_range = list(self.input_shape), self.hparams.data_range
        self.net = build(
            net,
            "net",
            VAENet,
            "network",
            input_shape=shape,
            latent_dim=latent_dim,
            **decoder_outputs(net, self.likelihood),
        )
        self.prior = build(
            prior,
            "prior",
            Prior,
            "prior",
            latent_dim=latent_dim,
            input_shape=shape,
            data_range=data_range,
        )
        self.posterior = build(
            posterior, "posterior", Posterior, "posterior", latent_dim=latent_dim
        )
        zeros = torch.zeros(1, latent_dim)
        self.analytic_kl = self.posterior.gaussian and self.prior.kl_dims(zeros, zeros) is not None
        if free_bits > 0 and not self.analytic_kl:
            raise SettingError(
                "free_bits",
                free_bits,
                "needs the KL of each latent dim, which this prior and posterior "
                "have no closed form for: use free_bits=0, "
                "or model/prior=normal model/posterior=gaussian",
            )

    @property
    def objective_differs(self) -> bool:
        return super().objective_differs or self.hparams.free_bits > 0

    def encode_gaussian(self, x):
        return self.net.posterior(x)

    def codes(self, x):
        return {"z": self.posterior.mean(*self.net.posterior(x))}

    def decode_logits(self, z):
        return self.net.decode(z)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x | z) in nats, summed over pixels, (B,)."""
        with self.decoding():
            out = self.net.decode(z)
        return -self.nll(out, x)

    def weight_terms(self, x, mu, logvar, n: int):
        """log_weight_terms for a posterior already computed: n draws per image, (n, B) each."""
        z, log_q = self.posterior.rsample(mu, logvar, n)  # (n, B, D), (n, B)
        b = len(x)
        xs = x.expand(n, *x.shape).reshape(n * b, *x.shape[1:])
        log_px_z = self.log_likelihood(xs, z.reshape(n * b, -1)).view(n, b)
        return log_px_z, self.prior.log_prob(z, self.net.posterior) - log_q

    def per_image(self, x):
        return (x, *self.net.posterior(x))

    def log_weight_terms_from(self, per_image, n):
        return self.weight_terms(*per_image, n)

    def log_weight_terms(self, x, n):
        return self.log_weight_terms_from(self.per_image(x), n)

    def kl_terms(self, mu, logvar, z, log_q) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(KL batch mean, KL per dim batch means or None): analytic where there is one,
        else Monte Carlo."""
        if self.analytic_kl:
            kl_dims = self.prior.kl_dims(mu, logvar).mean(0)
            return kl_dims.sum(), kl_dims
        return (log_q - self.prior.log_prob(z, self.net.posterior)).mean(), None

    def losses(self, x, kl_weight=None):
        beta = self.hparams.kl_weight if kl_weight is None else kl_weight
        mu, logvar = self.net.posterior(x)
        z, log_q = self.posterior.rsample(mu, logvar)
        recon = self.likelihood.nll(self.net.decode(z), x).mean()
        kl, kl_dims = self.kl_terms(mu, logvar, z, log_q)
        penalty = kl if kl_dims is None else kl_dims.clamp(min=self.hparams.free_bits).sum()
        return {
            "loss": recon + kl,
            "recon": recon,
            "kl": kl,
            "objective": recon + beta * penalty,
            "kl_dims": kl_dims,
            "codes": self.codes_from(mu, logvar),
        }

    def codes_from(self, mu, logvar) -> dict | None:
        """The codes of a validation batch from its posterior
        (not computed while training: nobody reads them)."""
        return None if self.training else {"z": self.posterior.mean(mu, logvar)}
