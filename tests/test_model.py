"""The VAE network and its loss terms: shapes, gradients, closed-form KL."""

import math

import pytest
import torch

from vae_lightning.errors import UserError
from vae_lightning.losses import kl_per_dim, reconstruction
from vae_lightning.model import VAE
from vae_lightning.module import VAEModule, check_loss_matches_data


def test_shapes_follow_the_tutorial_architecture():
    net = VAE(784, [512, 256], 20)
    x = torch.rand(5, 1, 28, 28)
    logits, mu, logvar = net(x)
    assert logits.shape == (5, 784) and mu.shape == (5, 20) and logvar.shape == (5, 20)
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    shapes = [(m.in_features, m.out_features) for m in linears]
    assert shapes == [(784, 512), (512, 256), (256, 20), (256, 20), (20, 256), (256, 512), (512, 784)]
    assert sum(p.numel() for p in net.parameters()) == 1_082_680  # 1.08M parameters
    out = net.decode(torch.randn(7, 20))
    assert out.shape == (7, 784) and out.min() >= 0 and out.max() <= 1


def test_output_activation_matches_the_data_range():
    net = VAE(784, [64], 4, output_range=(-1.0, 1.0))
    out = net.activate(torch.tensor([-1e4, 0.0, 1e4]))
    assert torch.allclose(out, torch.tensor([-1.0, 0.0, 1.0]))


def test_reparameterization_passes_gradients_to_mu_and_logvar():
    torch.manual_seed(0)
    mu = torch.zeros(1000, 3, requires_grad=True)
    logvar = torch.full((1000, 3), math.log(4.0), requires_grad=True)
    z = VAE.reparameterize(mu, logvar)
    assert abs(z.std().item() - 2.0) < 0.1 and abs(z.mean().item()) < 0.15
    z.pow(2).sum().backward()
    assert mu.grad.abs().sum() > 0 and logvar.grad.abs().sum() > 0
    # d/dlogvar E[z^2] = d/dlogvar exp(logvar) = 4 per element (Monte-Carlo, so loosely)
    assert abs(logvar.grad.mean().item() - 4.0) < 0.4


def test_analytic_kl_matches_monte_carlo():
    torch.manual_seed(0)
    mu, logvar = torch.tensor([[0.5, -1.0, 2.0]]), torch.tensor([[0.3, -0.7, 1.2]])
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    z = q.sample((400_000,))
    mc = (q.log_prob(z) - p.log_prob(z)).mean(0)
    analytic = kl_per_dim(mu, logvar)
    assert torch.allclose(analytic, mc, atol=0.02), (analytic, mc)
    assert torch.allclose(analytic, torch.distributions.kl_divergence(q, p))


def test_bce_is_summed_over_pixels_per_sample():
    logits = torch.zeros(2, 784)  # p = 0.5 everywhere -> log 2 nats per pixel
    x = torch.rand(2, 1, 28, 28)
    recon = reconstruction("bce", logits, x, torch.sigmoid)
    assert recon.shape == (2,)
    assert torch.allclose(recon, torch.full((2,), 784 * math.log(2.0)))


def test_module_loss_is_per_image_and_independent_of_batch_size():
    torch.manual_seed(0)
    module = VAEModule(latent_dim=4, hidden_dims=[32])
    x = torch.rand(64, 1, 28, 28)
    torch.manual_seed(1)
    full = module.losses(x)
    halves = []
    for part in (x[:32], x[32:]):
        torch.manual_seed(1)
        halves.append(module.losses(part)["recon"])
    assert 400 < full["recon"].item() < 800  # ~784 * log 2 at initialization: nats per image, not per batch
    assert torch.allclose(full["loss"], full["recon"] + full["kl"])
    assert abs(full["recon"].item() - sum(h.item() for h in halves) / 2) < 5


@pytest.mark.parametrize("mean,std", [(0.5, 0.5), (0.1307, 0.3081)])
def test_bce_on_normalized_pixels_is_refused(mean, std):
    lo, hi = (0 - mean) / std, (1 - mean) / std
    with pytest.raises(UserError, match=r"model.loss=bce.*data.mean/data.std.*data.mean=0 data.std=1"):
        check_loss_matches_data("bce", (lo, hi))
    check_loss_matches_data("mse", (lo, hi))  # mse models any range


def test_epoch_metric_is_the_per_image_mean_with_a_short_last_batch():
    module = VAEModule(latent_dim=2, hidden_dims=[8])
    module.log = lambda *a, **k: None  # outside a Trainer
    torch.manual_seed(0)
    big, small = torch.rand(16, 1, 28, 28), torch.rand(2, 1, 28, 28)
    losses = []
    for x in (big, small):
        torch.manual_seed(1)
        losses.append(module.losses(x)["loss"].item())
        torch.manual_seed(1)
        module._step("val", (x, None))
    expected = (16 * losses[0] + 2 * losses[1]) / 18
    assert abs(module.metrics["val_loss"].compute().item() - expected) < 1e-3
