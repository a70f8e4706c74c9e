"""The IWAE (Burda, Grosse & Salakhutdinov, 2016): the VAE's network, prior and posterior trained on
the k-sample importance-weighted bound, logged as */iw_loss. k=1 is the ELBO with a Monte Carlo KL;
larger k a tighter bound. */loss stays the negative ELBO (recon over the same k draws, the KL
analytic where it can be)."""

from vae_lightning.errors import SettingError, check_int
from vae_lightning.models.base import iw_bound
from vae_lightning.models.vae import VAE


class IWAE(VAE):
    extra_terms = ("iw_loss",)

    def __init__(self, k: int = 5, **settings):
        check_int(
            "k", k, low=1, example=5, note=" (importance samples per image; the paper: 5, 50)"
        )
        super().__init__(**settings)
        if self.hparams.free_bits > 0:
            raise SettingError(
                "free_bits",
                self.hparams.free_bits,
                "is not part of the IWAE bound: use model=vae for free bits",
            )

    def losses(self, x, kl_weight=None):
        beta = self.hparams.kl_weight if kl_weight is None else kl_weight
        mu, logvar = self.net.posterior(x)
        log_px_z, log_ratio = self.weight_terms(x, mu, logvar, self.hparams.k)
        out = iw_bound(log_px_z, log_ratio, beta)
        if self.analytic_kl:  # the closed form where there is one, as model=vae logs it
            kl, kl_dims = self.kl_terms(mu, logvar, None, None)
            out.update(kl=kl, loss=out["recon"] + kl, kl_dims=kl_dims)
        return {**out, "codes": self.codes_from(mu, logvar)}
