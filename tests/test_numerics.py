"""The log-space arithmetic of models/numerics.py: torch's values and gradients, without the CPU's
slow path for exponents below -87."""

import math

import torch

from vae_lightning.models.numerics import logsumexp


def test_logsumexp_matches_torch_in_float64_values_and_gradients_at_every_spread():
    torch.manual_seed(0)
    for spread in (1.0, 30.0, 300.0, 3000.0):  # 300+: most terms far below e^-87 of the largest
        x = (torch.randn(64, 500) * spread).requires_grad_()
        ours = logsumexp(x, 1)
        exact = torch.logsumexp(x.double(), 1)
        assert ours.dtype == torch.float32
        assert torch.allclose(ours.double(), exact, rtol=1e-6, atol=1e-5), spread
        (grad,) = torch.autograd.grad(ours.sum(), x)
        (exact_grad,) = torch.autograd.grad(exact.sum(), x)
        assert torch.allclose(grad, exact_grad.float(), atol=1e-6), spread
        assert math.isclose(grad.sum().item(), 64, rel_tol=1e-5)  # softmax rows sum to 1


def test_logsumexp_of_rows_without_a_finite_term_is_torchs_and_dims_work_both_ways():
    inf = float("inf")
    x = torch.tensor([[-inf, -inf, -inf], [1.0, inf, 0.0], [0.0, 0.0, 0.0], [-inf, 2.0, -inf]])
    expected = torch.tensor([-inf, inf, math.log(3), 2.0])
    assert torch.equal(logsumexp(x, 1), expected)
    assert torch.equal(logsumexp(x.T, 0), expected)
    y = torch.randn(5, 6, 7) * 100
    assert torch.allclose(logsumexp(y, 1), torch.logsumexp(y, 1), rtol=1e-6)
