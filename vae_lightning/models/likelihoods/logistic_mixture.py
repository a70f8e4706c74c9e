"""The discretized mixture of logistics (Salimans et al. 2017, PixelCNN++, section 2.1-2.2): per
pixel, ``components`` logistics mixed with weights from the decoder, each discretized to the 256
8-bit values as in ``discretized_logistic``. For colour images the channels of a component depend
on each other as in the paper: the mean of channel c moves by sum_j<c coeff_cj * x_j (for RGB:
green by red, blue by red and green), with coefficients in (-1, 1) from the decoder.

Decoder outputs per pixel: K mixture logits, K*C means, K*C log-scales, K*C(C-1)/2 coefficients
(RGB, K = 10: 100 channels, as in the paper). ``mean`` shows, per pixel, the mixture of the
components' locations (clamped to the pixel range), with each component's channel dependencies
applied to its own locations: a summary for the sample grid, not a draw."""

import torch

from vae_lightning.errors import check_float, check_int
from vae_lightning.models.likelihoods.base import Likelihood
from vae_lightning.models.likelihoods.discretized_logistic import bin_log_prob
from vae_lightning.models.numerics import logsumexp


class LogisticMixture(Likelihood):
    discrete = True

    def __init__(self, components: int = 10, min_log_scale: float = -7.0, **data) -> None:
        super().__init__(**data)
        self.components = check_int("components", components, low=1, example=10)
        self.min_log_scale = check_float("min_log_scale", min_log_scale, example=-7.0)
        c = self.input_shape[0]
        self.pairs = [(i, j) for i in range(c) for j in range(i)]  # channel i depends on j < i

    @property
    def outputs(self) -> int:
        c = self.input_shape[0]
        return self.components * (1 + 2 * c + len(self.pairs))

    def split(self, out: torch.Tensor):
        """(logits (B,K,H,W), means (B,K,C,H,W), log-scales (B,K,C,H,W), coeffs (B,K,P,H,W))."""
        b, _, h, w = out.shape
        k, c = self.components, self.input_shape[0]
        logits, means, log_scales, coeffs = out.float().split(
            [k, k * c, k * c, k * len(self.pairs)], dim=1
        )
        return (
            logits,
            means.reshape(b, k, c, h, w),
            log_scales.reshape(b, k, c, h, w).clamp(min=self.min_log_scale),
            torch.tanh(coeffs.reshape(b, k, len(self.pairs), h, w)),
        )

    def shifted(self, means: torch.Tensor, coeffs: torch.Tensor, given: torch.Tensor):
        """Each channel's mean moved by the channels before it (``given``: (B,K or 1,C,H,W))."""
        channels = list(means.unbind(2))
        for p, (i, j) in enumerate(self.pairs):
            channels[i] = channels[i] + coeffs[:, :, p] * given[:, :, j]
        return torch.stack(channels, dim=2)

    def pixel_log_prob(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        logits, means, log_scales, coeffs = self.split(out)
        u = self.unit(x).unsqueeze(1)  # (B, 1, C, H, W)
        top = self.pixel_levels - 1
        level = torch.round(u * top).clamp(0, top)
        means = self.shifted(means, coeffs, level / top)
        per_component = bin_log_prob(level, means, log_scales, self.pixel_levels).sum(2)
        return logsumexp(torch.log_softmax(logits, dim=1) + per_component, dim=1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        logits, means, _, coeffs = self.split(out)
        channels = list(means.unbind(2))
        for p, (i, j) in enumerate(self.pairs):  # in order: channel j is final before i needs it
            channels[i] = channels[i] + coeffs[:, :, p] * channels[j].clamp(0, 1)
        located = torch.stack(channels, dim=2).clamp(0, 1)
        weights = torch.softmax(logits, dim=1).unsqueeze(2)
        return self.from_unit((weights * located).sum(1))
