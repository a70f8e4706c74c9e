"""The HVAE's stochastic layers trained on the k-sample IWAE bound
(Burda et al., 2016: two layers, k = 50)."""

from vae_lightning.errors import check_int
from vae_lightning.models.base import iw_bound
from vae_lightning.models.hvae import HVAE


class HIWAE(HVAE):
    extra_terms = ("iw_loss",)

    def __init__(self, k: int = 5, **settings):
        check_int(
            "k", k, low=1, example=50, note=" (importance samples per image; the paper: 5, 50)"
        )
        super().__init__(**settings)

    def losses(self, x, kl_weight=None):
        beta = self.hparams.kl_weight if kl_weight is None else kl_weight
        return iw_bound(*self.log_weight_terms(x, self.hparams.k), beta)
