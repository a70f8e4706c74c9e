"""The likelihood components: discrete ones are distributions over the 256 pixel values (each sums
to 1, enumerated), bits per dimension, the mixture against the single logistic, gradients at the
edges, the decoder outputs each one needs, and the short names of before (bce, cb, mse)."""

import csv
import json
import math

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import TINY, run_module, run_train
from tests.test_open_components import colourful, evaluate, sample, train
from vae_lightning.data.synthetic import make_cifar_root
from vae_lightning.models import VAE
from vae_lightning.models.likelihoods import (
    Bernoulli,
    DiscretizedLogistic,
    Gaussian,
    LearnedGaussian,
    LogisticMixture,
    bits_per_dim,
)
from vae_lightning.models.networks import ConvNet, MLPNet

LEVELS = torch.arange(256, dtype=torch.float32)


def every_value(channels: int = 1) -> torch.Tensor:
    """The 256 values of one pixel as a (1, channels, 1, 256) image row, in [0, 1]."""
    return (LEVELS / 255).view(1, 1, 1, 256).expand(1, channels, 1, 256)


def spread(out: torch.Tensor) -> torch.Tensor:
    """One pixel's decoder output (1, K, 1, 1) repeated over the 256 pixels of ``every_value``."""
    return out.expand(-1, -1, 1, 256)


@pytest.mark.parametrize(
    "mean,log_scale",
    [(0.5, -2.0), (0.0, -7.0), (1.0, -7.0), (0.3, 3.0), (-4.0, -1.0), (0.25, -6.5)],
)
def test_the_discretized_logistic_sums_to_one_over_the_256_values(mean, log_scale):
    lik = DiscretizedLogistic(input_shape=(1, 1, 256))
    out = spread(torch.tensor([mean, log_scale]).view(1, 2, 1, 1))
    probs = lik.pixel_log_prob(out, every_value()).double().exp()
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert (probs >= 0).all()


def test_the_mixture_sums_to_one_over_the_256_values_and_over_colours_with_dependencies():
    torch.manual_seed(0)
    grey = LogisticMixture(components=4, input_shape=(1, 1, 256))
    out = spread(torch.randn(1, grey.outputs, 1, 1) * 2)
    assert grey.pixel_log_prob(out, every_value()).double().exp().sum().item() == pytest.approx(
        1.0, abs=1e-5
    )
    # RGB: p(r, g, b) = sum_k pi_k p(r) p(g | r) p(b | r, g); enumerate green and blue (256 x 256
    # pixels) for each red value, and add up all 256^3 colours
    rgb = LogisticMixture(components=2, input_shape=(3, 256, 256))
    assert rgb.outputs == 2 * (1 + 3 + 3 + 3)
    one = torch.randn(1, rgb.outputs, 1, 1)
    one[:, 2 + 12 :] = 3.0 * torch.randn(1, 6, 1, 1)  # strong channel dependencies (tanh ~ +-1)
    out = one.expand(-1, -1, 256, 256)
    g, b = torch.meshgrid(LEVELS / 255, LEVELS / 255, indexing="ij")
    total = 0.0
    for r in range(256):
        x = torch.stack([torch.full_like(g, r / 255), g, b]).unsqueeze(0)
        total += rgb.pixel_log_prob(out, x).double().exp().sum().item()
    assert total == pytest.approx(1.0, abs=1e-4)


def test_a_mixture_of_one_component_is_the_discretized_logistic():
    torch.manual_seed(1)
    x = torch.randint(0, 256, (4, 1, 5, 5)).float() / 255
    single, mixture = (
        DiscretizedLogistic(input_shape=(1, 5, 5)),
        LogisticMixture(components=1, input_shape=(1, 5, 5)),
    )
    params = torch.randn(4, 2, 5, 5)
    logit = torch.randn(4, 1, 5, 5)  # one component: its weight is 1 whatever the logit
    assert torch.allclose(
        mixture.log_prob(torch.cat([logit, params], 1), x), single.log_prob(params, x), atol=1e-4
    )
    # colour, with the channel coefficients at 0: the channels are independent logistics
    x3 = torch.randint(0, 256, (4, 3, 5, 5)).float() / 255
    single3, mixture3 = (
        DiscretizedLogistic(input_shape=(3, 5, 5)),
        LogisticMixture(components=1, input_shape=(3, 5, 5)),
    )
    params3 = torch.randn(4, 6, 5, 5)
    out = torch.cat([torch.zeros(4, 1, 5, 5), params3, torch.zeros(4, 3, 5, 5)], 1)
    assert torch.allclose(mixture3.log_prob(out, x3), single3.log_prob(params3, x3), atol=1e-3)


def test_bits_per_dim_of_a_uniform_model_is_eight():
    # a uniform distribution over 256 values: log 256 nats per dimension
    shape = (3, 32, 32)
    assert bits_per_dim(math.prod(shape) * math.log(256), shape) == pytest.approx(8.0, abs=1e-12)


@pytest.mark.parametrize("cls", [DiscretizedLogistic, LogisticMixture])
def test_gradients_are_finite_at_the_0_and_255_edges(cls):
    lik = cls(input_shape=(3, 2, 2))
    x = torch.tensor([0.0, 1.0]).repeat(12)[:12].view(1, 3, 2, 2)
    for scale in (-20.0, 0.0, 8.0):  # far below the floor, moderate, very wide
        for shift in (-50.0, 0.0, 50.0):  # means far outside the pixel range too
            out = torch.full((1, lik.outputs, 2, 2), shift)
            out[:, : lik.outputs // 2] = scale
            out.requires_grad_(True)
            loss = lik.nll(out, x).sum()
            loss.backward()
            assert torch.isfinite(loss) and torch.isfinite(out.grad).all(), (scale, shift)


def test_the_network_is_built_with_the_outputs_each_likelihood_needs():
    for likelihood, outputs in [
        ({"_target_": "vae_lightning.models.likelihoods.Bernoulli"}, 3),
        ({"_target_": "vae_lightning.models.likelihoods.LearnedGaussian"}, 6),
        ({"_target_": "vae_lightning.models.likelihoods.DiscretizedLogistic"}, 6),
        ({"_target_": "vae_lightning.models.likelihoods.LogisticMixture", "components": 5}, 50),
    ]:
        for net in (
            {"_target_": "vae_lightning.models.networks.MLPNet", "hidden_dims": [32]},
            {"_target_": "vae_lightning.models.networks.ConvNet", "channels": [8, 16]},
        ):
            model = VAE(
                net=net,
                likelihood=likelihood,
                latent_dim=4,
                input_shape=(3, 32, 32),
                data_range=((0.0,) * 3, (1.0,) * 3),
            )
            assert isinstance(model.net, (MLPNet, ConvNet))
            z = torch.randn(2, 4)
            assert model.net.decode(z).shape == (2, outputs, 32, 32)
            images = model.decode(z)  # the likelihood's mean, in the data range
            assert images.shape == (2, 3, 32, 32) and 0 <= images.min() <= images.max() <= 1
            x = torch.randint(0, 256, (2, 3, 32, 32)).float() / 255
            out = model.losses(x)
            assert torch.isfinite(out["loss"]) and out["loss"] > 0


def test_the_short_names_of_before_give_the_same_numbers():
    torch.manual_seed(0)
    out, x = torch.randn(2, 1, 4, 4), torch.rand(2, 1, 4, 4)
    shape = {"input_shape": (1, 4, 4)}
    bce = torch.nn.functional.binary_cross_entropy_with_logits(out, x, reduction="none")
    assert torch.allclose(Bernoulli(**shape).nll(out, x), bce.flatten(1).sum(1), atol=1e-5)
    # mse: a Gaussian of variance 1/2 around sigmoid(out): squared error + a constant
    gauss = Gaussian(**shape).nll(out, x)
    squared = (torch.sigmoid(out) - x).pow(2).flatten(1).sum(1)
    assert torch.allclose(gauss, squared + 16 * 0.5 * math.log(math.pi), atol=1e-5)
    # a checkpoint of before named its likelihood by loss=...
    for loss, cls in (("bce", "Bernoulli"), ("cb", "ContinuousBernoulli"), ("mse", "Gaussian")):
        assert type(VAE(loss=loss, latent_dim=2).likelihood).__name__ == cls


@pytest.mark.parametrize("shape", [(64, 1, 28, 28), (16, 3, 5, 7)])  # 49 blocks of 16; padded
def test_the_bernoulli_sum_of_the_iw_estimate_is_torchs_to_float32_rounding(shape):
    """eval's estimate sums the Bernoulli's log-probabilities as the log of products of 16
    factors (one log per 16 pixels): against float64, on binary and grey pixels, with logits of
    +-90 (where exp underflows), it is as close as torch's per-pixel form, and a wrong sign or a
    lost term would be off by nats."""
    torch.manual_seed(0)
    likelihood = Bernoulli(input_shape=shape[1:])
    out = torch.randn(shape) * 6
    out[0].view(-1)[:4] = torch.tensor([-90.0, 0.0, 90.0, 1e-8])
    for x in ((torch.rand(shape) < 0.5).float(), torch.rand(shape)):
        exact = likelihood.log_prob(out.double(), x.double())
        torchs = likelihood.log_prob(out, x)
        fast = likelihood.estimate_log_prob(out, x)
        assert fast.shape == torchs.shape == (shape[0],) and fast.dtype == torch.float32
        assert exact.abs().min() > 100  # sums of thousands of nats: float32 rounding is ~1e-4
        assert (fast - exact).abs().max() < max(2 * (torchs - exact).abs().max(), 1e-3)
    assert torch.equal(likelihood.nll(out, x, estimate=True), -fast)


def test_a_learned_variance_is_a_density_and_its_floor_holds():
    lik = LearnedGaussian(input_shape=(1, 1, 1), min_logvar=-3.0)
    x = torch.linspace(-1, 2, 30_001, dtype=torch.float64)
    out = torch.tensor([0.2, -10.0]).view(1, 2, 1, 1).expand(len(x), 2, 1, 1)
    density = (-lik.nll(out, x.view(-1, 1, 1, 1).float())).exp().double()
    assert torch.trapezoid(density, x).item() == pytest.approx(1.0, abs=1e-4)
    # the variance is the floor's, e^-3, not e^-10
    mean = torch.trapezoid(x * density, x)
    variance = torch.trapezoid((x - mean) ** 2 * density, x).item()
    assert variance == pytest.approx(math.exp(-3.0), rel=1e-3)


def test_the_mnist_8bit_preset_reports_bits_per_dim_in_every_record(tiny_mnist, tmp_path):
    """A sweep of the preset: */bpd beside */loss in TensorBoard, metrics.json, the sweep summary
    and the end-of-run summary; then eval in bits/dim for the ELBO and the IW estimate."""
    sweep_dir = tmp_path / "sweep"
    proc = run_train(
        "-m",
        "experiment=mnist_8bit",
        f"data.root={tiny_mnist}",
        f"hydra.sweep.dir={sweep_dir}",
        *TINY,
        "trainer.max_epochs=1",
        "model.latent_dim=2,4",
        "callbacks.latent_embedding.num_points=20",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    per_dim = 784 * math.log(2)
    with (sweep_dir / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    for row in rows:
        for stage in ("val", "test"):
            bits, nats = float(row[f"{stage}/bpd"]), float(row[f"{stage}/loss"])
            assert bits == pytest.approx(nats / per_dim, rel=1e-4) and 0 < bits < 8, row
    job = sweep_dir / "0"
    record = json.loads((job / "metrics.json").read_text())
    assert record["hparams"]["model.likelihood"] == "DiscretizedLogistic"
    assert record["metrics"]["test/bpd"] == pytest.approx(
        record["metrics"]["test/loss"] / per_dim, rel=1e-5
    )
    bits_line = f"test, bits/dim    {record['metrics']['test/bpd']:.4f}"
    assert bits_line in proc.stdout + proc.stderr
    events = EventAccumulator(str(next((job / "tensorboard").iterdir()))).Reload()
    assert {"train/bpd", "val/bpd", "test/bpd"} <= set(events.Tags()["scalars"])

    proc = run_module(
        "vae_lightning.eval", f"ckpt_path={job}/checkpoints/last.ckpt", "eval.iw_samples=5"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((job / "eval.json").read_text())
    assert result["likelihood"] == "DiscretizedLogistic"
    assert result["neg_elbo_bpd"] == pytest.approx(result["neg_elbo"] / per_dim, rel=1e-9)
    assert result["iw_bpd"] == pytest.approx(result["iw_nll"] / per_dim, rel=1e-9)
    assert result["iw_bpd"] < result["neg_elbo_bpd"] + 0.01  # the IW estimate is the tighter one
    assert f"= {result['iw_bpd']:.4f} bits/dim" in proc.stdout


def test_the_presets_compose_at_their_full_size():
    from tests.test_config import cfg_with, check_config

    _, model = check_config(cfg_with("experiment=cifar10_conv"))
    assert model.input_shape == (3, 32, 32) and model.likelihood.outputs == 100  # K=10, RGB
    assert model.net.decode(torch.zeros(1, 128)).shape == (1, 100, 32, 32)
    _, model = check_config(cfg_with("experiment=mnist_8bit"))
    assert type(model.likelihood).__name__ == "DiscretizedLogistic" and model.latent_dim == 32


def test_the_cifar10_conv_preset_learns_cifar_format_colour_images(tmp_path):
    """The whole CIFAR path on generated files in CIFAR-10's format (the real images are not
    reachable from this project's machines)."""
    root, run = make_cifar_root(tmp_path / "data", n_train=600, n_test=100), tmp_path / "cifar"
    result = train(
        run,
        "experiment=cifar10_conv",
        f"data.root={root}",
        "data.val_size=100",
        "data.batch_size=32",
        "model.net.channels=[16,32]",
        "model.net.hidden_dim=128",
        "model.latent_dim=16",
        "model.likelihood.components=5",
        "trainer.max_epochs=3",
    )
    bits = result["metrics"]["test/bpd"]
    assert result["epochs"] == 3 and 0 < bits < 8, result["metrics"]  # 8: a uniform model
    grid = sample(run, tmp_path / "cifar.png", "n=16")
    assert grid.shape == (4 * 34 + 2, 4 * 34 + 2, 3) and colourful(grid) > 5
    evaluated = evaluate(run)
    assert evaluated["iw_bpd"] < evaluated["neg_elbo_bpd"] + 0.01
