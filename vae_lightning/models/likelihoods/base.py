"""The likelihood interface: p(x | z) given what the decoder outputs.

A likelihood is a component: ``conf/model/likelihood/<name>.yaml`` names its class with
``_target_`` and lists its own settings; the model builds it as
``Likelihood(input_shape=..., data_range=..., pixel_levels=..., **settings)`` from what the data
says (image shape, the interval of each channel's normalized pixels, the number of evenly spaced
values a pixel takes: 256 for 8-bit images, 2 once binarized). It then builds the network with
``outputs`` channels of decoder output per pixel, so every network works with every likelihood.

    outputs             decoder output channels it needs (C: one parameter per channel)
    pixel_log_prob(out, x)  log p(x | z) of each pixel in nats (its channels together): (B, H, W)
    estimate_log_prob(out, x)  optional: their sum per image (B,) as eval's IW estimate computes
                        it over thousands of draws, equal to float32 rounding but faster
                        (bernoulli.py); by default the sum of ``pixel_log_prob``
    mean(out)           E[x | z] in the data range, (B, C, H, W): what samples and reconstructions
                        show
    discrete            True for a distribution over the pixel grid: its nats convert to bits per
                        dimension, nats / (C * H * W * ln 2), the unit papers report
    unit_range          True when it is defined on pixels in [0, 1] only

The output activation lives here, not in the network (the network never needs the pixel range).
Everything is computed in float32, whatever the autocast. A likelihood checks its own settings and
the data it is given in its constructor (``SettingError`` / ``UserError``: one line).
"""

import math
from collections.abc import Sequence

import torch
from torch import nn

from vae_lightning.errors import UserError


def per_channel_range(data_range: Sequence) -> tuple[list[float], list[float]]:
    """(lo per channel, hi per channel) from ``[lo, hi]`` where each is
    a number or a list of numbers."""
    lo, hi = data_range
    lo = [float(v) for v in lo] if isinstance(lo, Sequence) else [float(lo)]
    hi = [float(v) for v in hi] if isinstance(hi, Sequence) else [float(hi)]
    if len(lo) != len(hi):
        raise ValueError(f"data_range {data_range}: lo and hi have different channel counts")
    return lo, hi


def bits_per_dim(nats, shape: Sequence[int]):
    """Nats per image -> bits per dimension (per pixel and channel): nats / (C * H * W * ln 2)."""
    return nats / (math.prod(shape) * math.log(2))


def range_text(lo: Sequence[float], hi: Sequence[float]) -> str:
    """'[-1, 1]', or one interval per channel when they differ."""
    if len(set(lo)) == 1 and len(set(hi)) == 1:
        return f"[{lo[0]:g}, {hi[0]:g}]"
    return " ".join(f"[{a:g}, {b:g}]" for a, b in zip(lo, hi)) + " (per channel)"


class Likelihood(nn.Module):
    """Base class: stores the image shape, each channel's pixel range (``lo``, ``scale``: buffers
    shaped to broadcast over (B, C, H, W)) and the pixel levels, and refuses data it cannot model.
    Subclasses implement ``log_prob`` and ``mean`` and may change ``outputs``."""

    unit_range = False
    discrete = False

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        data_range: Sequence = ((0.0,), (1.0,)),
        pixel_levels: int | None = 256,
    ) -> None:
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.pixel_levels = pixel_levels
        lo, hi = per_channel_range(data_range)
        if len(lo) == 1 and self.input_shape[0] > 1:
            lo, hi = lo * self.input_shape[0], hi * self.input_shape[0]
        unit = all(
            math.isclose(a, 0.0, abs_tol=1e-6) and math.isclose(b, 1.0, abs_tol=1e-6)
            for a, b in zip(lo, hi)
        )
        if self.unit_range and not unit:
            raise UserError(
                f"model/likelihood={self.option} needs pixels in [0, 1] but data.mean/data.std "
                f"put them in {range_text(lo, hi)}: use data.mean=0 data.std=1, or "
                "model/likelihood=gaussian (or a discrete one) for other ranges"
            )
        if self.discrete and pixel_levels != 256:
            raise UserError(
                f"model/likelihood={self.option} is a distribution over the 256 levels of 8-bit "
                f"pixels, but the data's pixels take {pixel_levels or 'continuous'} values"
                + (" (data.binarize=true)" if pixel_levels == 2 else "")
                + ": use data.binarize=false, or model/likelihood=bernoulli for binary pixels"
            )
        shape = (len(lo), 1, 1)
        self.register_buffer("lo", torch.tensor(lo).view(shape), persistent=False)
        self.register_buffer(
            "scale", (torch.tensor(hi) - torch.tensor(lo)).view(shape), persistent=False
        )

    @property
    def option(self) -> str:
        """The config option that chooses it (``model/likelihood=<option>``)."""
        return type(self).__module__.rsplit(".", 1)[-1]

    @property
    def outputs(self) -> int:
        """Decoder output channels per pixel."""
        return self.input_shape[0]

    def unit(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized pixels -> [0, 1]."""
        return (x - self.lo) / self.scale

    def from_unit(self, u: torch.Tensor) -> torch.Tensor:
        return self.lo + self.scale * u

    def pixel_log_prob(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def log_prob(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x | z) in nats, summed over each image's pixels: (B,)."""
        return self.pixel_log_prob(out, x).flatten(1).sum(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def estimate_log_prob(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``log_prob`` in eval's IW estimate (thousands of draws per image, no gradient): the
        same sum to float32 rounding, in the form fastest there. The default: ``log_prob``."""
        return self.log_prob(out, x)

    def nll(self, out: torch.Tensor, x: torch.Tensor, estimate: bool = False) -> torch.Tensor:
        """-log p(x | z) in nats, summed over pixels: one value per image, shape (B,);
        ``estimate``: by ``estimate_log_prob``."""
        x = x.reshape(len(out), -1, *out.shape[-2:])  # (B, C, H, W) as the decoder's output
        log_prob = self.estimate_log_prob if estimate else self.log_prob
        return -log_prob(out.float(), x.float())
