"""The networks, the likelihoods and the LightningModule: shapes, gradients, closed-form KL, the
interface."""

import math

import pytest
import torch

from vae_lightning.errors import SettingError, UserError
from vae_lightning.models import VAE
from vae_lightning.models.likelihoods import Bernoulli, ContinuousBernoulli, Gaussian
from vae_lightning.models.networks import ConvNet, MLPNet, VAENet
from vae_lightning.models.priors.normal import kl_per_dim


def likelihood(name: str, data_range=((0.0,), (1.0,)), channels: int = 1):
    """The likelihood that ``model.loss=<name>`` was (bce, cb, mse)."""
    cls = {"bce": Bernoulli, "cb": ContinuousBernoulli, "mse": Gaussian}[name]
    return cls(input_shape=(channels, 1, 1), data_range=data_range)


def mlp(*hidden: int, **settings) -> dict:
    """The config of an MLP network with these hidden widths (what model.net holds)."""
    return {
        "_target_": "vae_lightning.models.networks.MLPNet",
        "hidden_dims": list(hidden),
        **settings,
    }


def test_mlp_follows_the_tutorial_architecture():
    net = MLPNet((1, 28, 28), 20, [512, 256])
    x = torch.rand(5, 1, 28, 28)
    logits, mu, logvar = net(x)
    assert logits.shape == (5, 1, 28, 28) and mu.shape == (5, 20) and logvar.shape == (5, 20)
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    shapes = [(m.in_features, m.out_features) for m in linears]
    assert shapes == [
        (784, 512),
        (512, 256),
        (256, 20),
        (256, 20),
        (20, 256),
        (256, 512),
        (512, 784),
    ]
    assert sum(p.numel() for p in net.parameters()) == 1_082_680  # 1.08M parameters
    assert [type(m).__name__ for m in net.encoder.modules()].count("ReLU") == 2
    tanh = MLPNet((1, 28, 28), 20, [200, 200], activation="tanh")  # the IWAE paper's
    assert [type(m).__name__ for m in tanh.modules()].count("Tanh") == 4 and "ReLU" not in str(tanh)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 28, 28), (1, 32, 32)])
def test_conv_net_encodes_and_decodes_28_and_32_pixel_images(shape):
    net = ConvNet(shape, latent_dim=8)
    x = torch.rand(4, *shape)
    mu, logvar = net.encode(x)
    assert mu.shape == logvar.shape == (4, 8)
    assert net.decode(torch.randn(6, 8)).shape == (6, *shape)
    logits, _, _ = net(x)
    logits.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    assert any(isinstance(m, torch.nn.Conv2d) for m in net.modules())


def test_network_settings_are_checked_by_the_network():
    with pytest.raises(
        SettingError,
        match=r"^channels=\[32, 64, 128\] halves the 28x28 images 3 times.*divide by 8",
    ):
        ConvNet((1, 28, 28), 8, channels=[32, 64, 128])
    with pytest.raises(
        SettingError, match=r"^hidden_dims=\[\] must be a non-empty list of positive integers"
    ):
        MLPNet((1, 28, 28), 8, hidden_dims=[])
    with pytest.raises(SettingError, match=r"^activation='swish' is not one of relu, tanh"):
        MLPNet((1, 28, 28), 8, activation="swish")
    # seen from the module, the same errors name the full setting
    with pytest.raises(SettingError, match=r"^net.hidden_dims=\[0\] must be"):
        VAE(net=mlp(0))
    with pytest.raises(
        SettingError, match=r"^net._target_='torch.nn.Linear' is not a network: .*VAENet"
    ):
        VAE(net={"_target_": "torch.nn.Linear", "in_features": 1, "out_features": 1})


def test_module_rebuilds_any_network_from_plain_hyperparameters():
    module = VAE(
        net={"_target_": "vae_lightning.models.networks.ConvNet", "channels": [8, 16]},
        latent_dim=3,
        input_shape=(3, 32, 32),
    )
    assert isinstance(module.net, ConvNet) and isinstance(module.net, VAENet)
    hp = dict(module.hparams)
    assert hp["net"] == {"_target_": "vae_lightning.models.networks.ConvNet", "channels": [8, 16]}
    assert hp["input_shape"] == [3, 32, 32] and hp["data_range"] == [[0.0], [1.0]]
    copy = VAE(**hp)
    copy.load_state_dict(module.state_dict())
    z = torch.randn(2, 3)
    assert torch.equal(copy.decode(z), module.decode(z)) and copy.decode(z).shape == (2, 3, 32, 32)


def test_reparameterization_passes_gradients_to_mu_and_logvar():
    torch.manual_seed(0)
    mu = torch.zeros(1000, 3, requires_grad=True)
    logvar = torch.full((1000, 3), math.log(4.0), requires_grad=True)
    z = VAENet.reparameterize(mu, logvar)
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
    logits = torch.zeros(2, 1, 28, 28)  # p = 0.5 everywhere -> log 2 nats per pixel
    recon = likelihood("bce").nll(logits, torch.rand(2, 1, 28, 28))
    assert recon.shape == (2,)
    assert torch.allclose(recon, torch.full((2,), 784 * math.log(2.0)))
    x = torch.tensor([[[[1.0, 0.0]]]])  # a confident right guess costs ~0, a wrong one ~|logit|
    expected = 8.0 + 2 * math.log1p(math.exp(-8))
    assert likelihood("bce").nll(torch.tensor([[[[8.0, 8.0]]]]), x).item() == pytest.approx(
        expected, rel=1e-4
    )


def test_output_activation_follows_the_data_range_per_channel():
    lik = likelihood("mse", data_range=([-1.0, 0.0, -2.0], [1.0, 1.0, 2.0]), channels=3)
    mean = lik.mean(torch.tensor([-1e4, 0.0, 1e4]).view(1, 3, 1, 1).expand(1, 3, 1, 1))
    assert torch.allclose(mean.flatten(), torch.tensor([-1.0, 0.5, 2.0]))
    assert torch.allclose(
        likelihood("bce").mean(torch.zeros(1, 1, 2, 2)), torch.full((1, 1, 2, 2), 0.5)
    )


def test_module_loss_is_per_image_and_independent_of_batch_size():
    torch.manual_seed(0)
    module = VAE(latent_dim=4, net=mlp(32))
    x = torch.rand(64, 1, 28, 28)
    torch.manual_seed(1)
    full = module.losses(x)
    halves = []
    for part in (x[:32], x[32:]):
        torch.manual_seed(1)
        halves.append(module.losses(part)["recon"])
    # ~784 * log 2 at initialization: nats per image, not per batch
    assert 400 < full["recon"].item() < 800
    assert torch.allclose(full["loss"], full["recon"] + full["kl"])
    assert abs(full["recon"].item() - sum(h.item() for h in halves) / 2) < 5


@pytest.mark.parametrize("mean,std", [(0.5, 0.5), (0.1307, 0.3081)])
def test_bce_on_normalized_pixels_is_refused(mean, std):
    lo, hi = (0 - mean) / std, (1 - mean) / std
    with pytest.raises(
        UserError,
        match=r"^model/likelihood=bernoulli needs pixels in .*data.mean/data.std.*data.mean=0 "
        r"data.std=1, or model/likelihood=gaussian",
    ):
        likelihood("bce", (lo, hi))
    with pytest.raises(
        UserError, match=r"^model/likelihood=continuous_bernoulli needs pixels in \[0, 1\] "
    ):
        VAE(loss="cb", data_range=(lo, hi))  # a checkpoint of before: model.loss=cb
    likelihood("mse", (lo, hi))  # the Gaussian models any range


def test_epoch_metric_is_the_per_image_mean_with_a_short_last_batch():
    module = VAE(latent_dim=2, net=mlp(8))
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
    assert abs(module.metrics["val_terms"].compute()["loss"].item() - expected) < 1e-3
