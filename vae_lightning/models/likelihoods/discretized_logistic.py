"""The discretized logistic (Kingma et al. 2016; Salimans et al. 2017, PixelCNN++): per pixel and
channel a logistic(mean, exp(log_scale)) on [0, 1], integrated over each of the 256 bins of an
8-bit value (width 1/255); the lowest and highest bins take the tails, so the 256 probabilities
sum to 1. The decoder gives the mean and log-scale of each channel. A distribution over the pixel
values: nats convert to bits per dimension."""

import torch
import torch.nn.functional as F

from vae_lightning.errors import check_float
from vae_lightning.models.likelihoods.base import Likelihood


def bin_log_prob(
    level: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, levels: int
) -> torch.Tensor:
    """log P(pixel = level) for a logistic(mean, exp(log_scale)) on [0, 1] cut into ``levels``
    bins centred on level / (levels - 1); the edge bins reach to -inf and +inf.

    The interior bins use log(sigmoid(a) - sigmoid(b)) = logsigmoid(a) + logsigmoid(-b) +
    log(1 - exp(b - a)): exact, and finite however narrow the logistic."""
    half = 0.5 / (levels - 1)
    centred = level / (levels - 1) - mean
    inv_scale = torch.exp(-log_scale)
    plus, minus = inv_scale * (centred + half), inv_scale * (centred - half)
    below, above = F.logsigmoid(plus), F.logsigmoid(-minus)  # log P(X < upper), log P(X > lower)
    inner = below + above + torch.log(-torch.expm1(minus - plus))
    return torch.where(level == 0, below, torch.where(level == levels - 1, above, inner))


class DiscretizedLogistic(Likelihood):
    discrete = True

    def __init__(self, min_log_scale: float = -7.0, **data) -> None:
        super().__init__(**data)
        self.min_log_scale = check_float("min_log_scale", min_log_scale, example=-7.0)

    @property
    def outputs(self) -> int:
        return 2 * self.input_shape[0]

    def levels_of(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized pixels -> their level 0..255 (as floats)."""
        top = self.pixel_levels - 1
        return torch.round(self.unit(x) * top).clamp(0, top)

    def pixel_log_prob(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        mean, log_scale = out.chunk(2, dim=1)
        log_scale = log_scale.clamp(min=self.min_log_scale)
        return bin_log_prob(self.levels_of(x), mean, log_scale, self.pixel_levels).sum(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        """The logistic's location clamped to the pixel range (its median where the tails are
        not cut)."""
        return self.from_unit(out.float().chunk(2, dim=1)[0].clamp(0, 1))
