"""Float32 log-space arithmetic that keeps off the CPU's slow path.

On CPU, ``torch.exp`` of a float32 below about -87 (where the result underflows) runs about 50x
slower than elsewhere (torch 2.14 on the AVX-512 CPU here: 9.6 ms instead of 0.18 ms for 1.25
million values), and ``torch.logsumexp`` takes that path for every term that far below the
largest. Mixture densities are mostly such terms (37 % of the VampPrior's 500 components per draw
of a trained model). This version clamps the exponents at -80 first: a term that small changes the
sum by less than 2e-35 of its largest term, far below float32's resolution, so the values are
torch's, and so are the gradients (a clamped term gets none instead of < 2e-35)."""

import torch

FLOOR = -80.0  # exp(-80) = 1.8e-35: a normal float32, nothing beside 1 (resolution 1.2e-7)


def logsumexp(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``torch.logsumexp(x, dim)``; rows without a finite term give their max (-inf, inf, nan)
    as torch's does."""
    top = x.detach().amax(dim, keepdim=True)
    finite = torch.isfinite(top)
    shift = torch.where(finite, top, torch.zeros_like(top))
    total = (x - shift).clamp(min=FLOOR).exp().sum(dim).log() + shift.squeeze(dim)
    return torch.where(finite.squeeze(dim), total, top.squeeze(dim))
