"""Normal(mean, variance) per pixel with both from the decoder: the mean as for ``gaussian``
(sigmoid to the data range), the log-variance from a second output channel per image channel,
clamped to [``min_logvar``, ``max_logvar``] (a variance without a floor grows the density without
bound on flat pixels, such as MNIST's black background)."""

import torch
from torch.distributions import Normal

from vae_lightning.errors import SettingError, check_float
from vae_lightning.models.likelihoods.base import Likelihood


class LearnedGaussian(Likelihood):
    def __init__(self, min_logvar: float = -7.0, max_logvar: float = 2.0, **data) -> None:
        super().__init__(**data)
        self.min_logvar = check_float("min_logvar", min_logvar, example=-7.0)
        self.max_logvar = check_float("max_logvar", max_logvar, example=2.0)
        if self.max_logvar <= self.min_logvar:
            raise SettingError(
                "max_logvar", max_logvar, f"must be above min_logvar={min_logvar:g}", plain=True
            )

    @property
    def outputs(self) -> int:
        return 2 * self.input_shape[0]

    def pixel_log_prob(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        mean, logvar = out.float().chunk(2, dim=1)
        logvar = logvar.clamp(self.min_logvar, self.max_logvar)
        normal = Normal(
            self.from_unit(torch.sigmoid(mean)), (0.5 * logvar).exp(), validate_args=False
        )
        return normal.log_prob(x).sum(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return self.from_unit(torch.sigmoid(out.float().chunk(2, dim=1)[0]))
