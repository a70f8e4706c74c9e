"""The decoder's likelihood p(x | z) (``model.loss``), as torch.distributions over the pixels.

The network's decoder returns logits; the likelihood turns them into a distribution over images in
the data range, so the output activation lives here, not in the network:

``bce``  Bernoulli(logits): the exact likelihood of binary pixels (use ``data.binarize=true``); on
         grey levels it is the usual "BCE" loss, not a density.
``cb``   ContinuousBernoulli(logits): a proper density on grey levels in [0, 1] (Loaiza-Ganem &
         Cunningham, 2019); its mean, not sigmoid(logits), is what images show.
``mse``  Normal(lo + (hi - lo) * sigmoid(logits), variance 1/2): a Gaussian density on pixels in any
         range [lo, hi] (per channel), normalizer included.

Which of these give nats comparable with papers: see the README.
"""

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Bernoulli, ContinuousBernoulli, Distribution, Normal

from vae_lightning.errors import SettingError, check_choice

LOSSES = ("bce", "cb", "mse")
UNIT_RANGE_LOSSES = ("bce", "cb")  # defined on pixels in [0, 1]
MSE_VARIANCE = 0.5


def per_channel_range(data_range: Sequence) -> tuple[list[float], list[float]]:
    """(lo per channel, hi per channel) from ``[lo, hi]`` where each is
    a number or a list of numbers."""
    lo, hi = data_range
    lo = [float(v) for v in lo] if isinstance(lo, Sequence) else [float(lo)]
    hi = [float(v) for v in hi] if isinstance(hi, Sequence) else [float(hi)]
    if len(lo) != len(hi):
        raise ValueError(f"data_range {data_range}: lo and hi have different channel counts")
    return lo, hi


def range_text(lo: Sequence[float], hi: Sequence[float]) -> str:
    """'[-1, 1]', or one interval per channel when they differ."""
    if len(set(lo)) == 1 and len(set(hi)) == 1:
        return f"[{lo[0]:g}, {hi[0]:g}]"
    return " ".join(f"[{a:g}, {b:g}]" for a, b in zip(lo, hi)) + " (per channel)"


class Likelihood(nn.Module):
    """p(x | z) given the decoder's logits; ``data_range`` = [lo, hi] of the normalized
    pixels (per channel)."""

    def __init__(self, loss: str = "bce", data_range: Sequence = (0.0, 1.0)) -> None:
        super().__init__()
        self.loss = check_choice("loss", loss, LOSSES)
        lo, hi = per_channel_range(data_range)
        unit = all(
            math.isclose(a, 0.0, abs_tol=1e-6) and math.isclose(b, 1.0, abs_tol=1e-6)
            for a, b in zip(lo, hi)
        )
        if loss in UNIT_RANGE_LOSSES and not unit:
            raise SettingError(
                "loss",
                loss,
                f"needs pixels in [0, 1] but data.mean/data.std put them in {range_text(lo, hi)}: "
                "use data.mean=0 data.std=1, or {key}=mse for other ranges",
                plain=True,
            )
        shape = (len(lo), 1, 1)  # broadcasts over (B, C, H, W)
        self.register_buffer("lo", torch.tensor(lo).view(shape), persistent=False)
        self.register_buffer(
            "scale", (torch.tensor(hi) - torch.tensor(lo)).view(shape), persistent=False
        )

    def distribution(self, logits: torch.Tensor) -> Distribution:
        """The per-pixel distribution for decoder logits (B, C, H, W),
        in fp32 whatever the autocast."""
        logits = logits.float()
        if self.loss == "bce":
            return Bernoulli(logits=logits, validate_args=False)
        if self.loss == "cb":
            return ContinuousBernoulli(logits=logits, validate_args=False)
        return Normal(
            self.lo + self.scale * torch.sigmoid(logits),
            math.sqrt(MSE_VARIANCE),
            validate_args=False,
        )

    def nll(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x | z) in nats, summed over pixels: one value per image, shape (B,)."""
        return -self.distribution(logits).log_prob(x.reshape(logits.shape)).flatten(1).sum(1)

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        """E[x | z]: what samples and reconstructions show (for cb the
        distribution's mean, not sigmoid(logits))."""
        return self.distribution(logits).mean
