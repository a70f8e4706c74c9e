"""The likelihood components p(x | z) (``model/likelihood``); the interface is in base.py."""

from vae_lightning.models.likelihoods.base import (
    Likelihood,
    bits_per_dim,
    per_channel_range,
    range_text,
)
from vae_lightning.models.likelihoods.bernoulli import Bernoulli
from vae_lightning.models.likelihoods.continuous_bernoulli import ContinuousBernoulli
from vae_lightning.models.likelihoods.discretized_logistic import DiscretizedLogistic
from vae_lightning.models.likelihoods.gaussian import Gaussian
from vae_lightning.models.likelihoods.learned_gaussian import LearnedGaussian
from vae_lightning.models.likelihoods.logistic_mixture import LogisticMixture

__all__ = [
    "Bernoulli",
    "ContinuousBernoulli",
    "DiscretizedLogistic",
    "Gaussian",
    "LearnedGaussian",
    "Likelihood",
    "bits_per_dim",
    "LogisticMixture",
    "per_channel_range",
    "range_text",
]
