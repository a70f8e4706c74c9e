"""The research knobs: likelihoods (cb, mse), beta, KL warm-up, free bits, binarization, TensorBoard
extras."""

import json
import math
import os
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.distributions import ContinuousBernoulli

from tests.conftest import REPO
from tests.test_config import check_config
from tests.test_model import mlp
from vae_lightning.callbacks.threads import CpuThreads, usable_cores
from vae_lightning.data.mnist import MNISTDataModule
from vae_lightning.errors import UserError
from vae_lightning.models import VAE, likelihoods
from vae_lightning.resolvers import register_resolvers

register_resolvers()

LAMBDAS = torch.tensor([0.01, 0.2, 0.4999, 0.5, 0.5002, 0.7, 0.97], dtype=torch.float64)
GRID = torch.linspace(0, 1, 200_001, dtype=torch.float64)


def likelihood(name: str, data_range=((0.0,), (1.0,)), channels: int = 1):
    """The likelihood that ``model.loss=<name>`` was (bce, cb, mse)."""
    cls = {
        "bce": likelihoods.Bernoulli,
        "cb": likelihoods.ContinuousBernoulli,
        "mse": likelihoods.Gaussian,
    }[name]
    return cls(input_shape=(channels, 1, 1), data_range=data_range)


def cb_log_norm(logits: torch.Tensor) -> torch.Tensor:
    """log C(lambda): what the cb likelihood adds to -BCE, read off its log density
    at x = 0 and 1."""
    lik = likelihood("cb")
    # log C + log(1 - lambda)
    at0 = -lik.nll(logits.view(-1, 1, 1, 1), torch.zeros(len(logits), 1, 1, 1))
    return at0.double() - torch.log1p(-torch.sigmoid(logits.double()))


def test_cb_log_normalizer_matches_numeric_integration():
    logits = torch.logit(LAMBDAS)
    # C(lambda) = 1 / integral_0^1 lambda^x (1 - lambda)^(1 - x) dx
    unnormalized = LAMBDAS[:, None] ** GRID * (1 - LAMBDAS[:, None]) ** (1 - GRID)
    numeric = -torch.trapezoid(unnormalized, GRID).log()
    assert torch.allclose(cb_log_norm(logits.float()), numeric, atol=1e-5)
    # lambda = 1/2: uniform density is 1
    assert cb_log_norm(torch.zeros(1)).item() == pytest.approx(math.log(2))


def test_cb_is_a_density_on_the_unit_interval_and_samples_show_its_mean():
    logits = torch.logit(LAMBDAS).float()
    x = GRID.float()[:, None].expand(-1, len(LAMBDAS))
    nll = likelihood("cb").nll(
        logits.expand(len(GRID), -1).reshape(-1, 1, 1, 1), x.reshape(-1, 1, 1, 1)
    )
    density = (-nll).exp().view(len(GRID), -1).double()
    assert torch.allclose(
        torch.trapezoid(density, GRID, dim=0),
        torch.ones(len(LAMBDAS), dtype=torch.float64),
        atol=1e-4,
    )
    mean = torch.trapezoid(GRID[:, None] * density, GRID, dim=0)
    assert torch.allclose(likelihood("cb").mean(logits).double(), mean, atol=1e-4)
    # the mean is not lambda: showing lambda would be wrong
    assert (mean - LAMBDAS).abs().max() > 0.1
    module = VAE(latent_dim=3, net=mlp(16), loss="cb")
    z = torch.randn(4, 3)
    expected = ContinuousBernoulli(logits=module.net.decode(z)).mean
    assert module.decode(z).shape == (4, 1, 28, 28) and torch.allclose(module.decode(z), expected)


def test_mse_is_a_gaussian_density_with_variance_one_half():
    x = torch.linspace(-6, 6, 120_001, dtype=torch.float64)[:, None]
    logit = torch.full_like(x, 0.3)  # decoder output: the mean is -6 + 12 * sigmoid(0.3)
    density = (
        -likelihood("mse", data_range=(-6.0, 6.0)).nll(logit.view(-1, 1, 1, 1), x.view(-1, 1, 1, 1))
    ).exp()
    assert torch.trapezoid(density, x[:, 0]).item() == pytest.approx(1.0, abs=1e-6)
    # sigmoid scaled to the data range
    mean = -6.0 + 12.0 * torch.sigmoid(torch.tensor(0.3, dtype=torch.float64))
    assert torch.trapezoid(x[:, 0] * density, x[:, 0]).item() == pytest.approx(
        mean.item(), abs=1e-4
    )
    variance = torch.trapezoid((x[:, 0] - mean) ** 2 * density, x[:, 0])
    assert variance.item() == pytest.approx(0.5, abs=1e-4)


def test_kl_warmup_is_linear_from_zero_to_beta():
    module = VAE(latent_dim=2, net=mlp(8), kl_weight=2.0, kl_warmup_epochs=4)
    assert [module.kl_weight_at(e) for e in (0, 1, 2.5, 4, 9)] == [0.0, 0.5, 1.25, 2.0, 2.0]
    assert VAE(latent_dim=2, net=mlp(8), kl_weight=0.5).kl_weight_at(0) == 0.5  # no warm-up


def test_loss_stays_the_negative_elbo_and_beta_weights_only_the_objective():
    module = VAE(latent_dim=4, net=mlp(32), kl_weight=4.0)
    torch.manual_seed(0)
    out = module.losses(torch.rand(16, 1, 28, 28))
    assert out["kl"] > 0
    assert torch.allclose(out["loss"], out["recon"] + out["kl"])
    assert torch.allclose(out["objective"], out["recon"] + 4.0 * out["kl"])
    torch.manual_seed(0)
    assert torch.allclose(
        module.losses(torch.rand(16, 1, 28, 28), kl_weight=0.0)["objective"], out["recon"]
    )


def test_free_bits_stop_the_kl_gradient_below_the_threshold():
    torch.manual_seed(0)
    x = torch.rand(32, 1, 28, 28)
    for free_bits, kl_gets_gradient in ((0.0, True), (5.0, False)):
        module = VAE(latent_dim=4, net=mlp(32), free_bits=free_bits)
        torch.manual_seed(1)
        out = module.losses(x)
        per_dim_floor = 4 * free_bits
        assert out["objective"].item() == pytest.approx(
            out["recon"].item() + max(out["kl"].item(), per_dim_floor), rel=1e-6
        )
        (out["objective"] - out["recon"]).backward()
        assert (
            module.net.fc_mu.weight.grad is not None
            and module.net.fc_mu.weight.grad.abs().sum() > 0
        ) == kl_gets_gradient


def test_training_logs_the_objective_and_the_warmup_weight(tiny_mnist):
    L.seed_everything(0)
    dm = MNISTDataModule(root=str(tiny_mnist), batch_size=50, val_size=100, download=False)
    module = VAE(latent_dim=4, net=mlp(32), kl_weight=2.0, kl_warmup_epochs=2, free_bits=0.1)
    trainer = L.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(module, datamodule=dm)
    m = {k: float(v) for k, v in trainer.callback_metrics.items()}
    # epoch 1 of a 2-epoch warm-up: beta = 2 * (1 + i/10) / 2 for batches i = 0..9, mean 1.45
    assert m["train/kl_weight"] == pytest.approx(1.45, abs=1e-4)
    # the real negative ELBO
    assert m["val/loss"] == pytest.approx(m["val/recon"] + m["val/kl"], rel=1e-5)
    assert "train/objective" in m and m["train/objective"] != pytest.approx(m["train/loss"])


def test_binarization_is_dynamic_for_training_and_fixed_for_test(tiny_mnist):
    dm = MNISTDataModule(
        root=str(tiny_mnist), batch_size=500, val_size=100, download=False, binarize=True
    )
    grey = MNISTDataModule(root=str(tiny_mnist), batch_size=500, val_size=100, download=False)
    loader = dm.train_dataloader()
    first = next(iter(loader))[0]
    again = next(iter(loader))[0]
    loader.batch_sampler.sampler.set_epoch(1)  # what Lightning does at each epoch's start
    other_epoch = next(iter(loader))[0]
    assert set(first.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(first, again) and not torch.equal(first[: len(other_epoch)], other_epoch)
    assert not torch.equal(first, next(iter(grey.train_dataloader()))[0])
    p = next(iter(grey.train_dataloader()))[0]
    # Bernoulli(p) draws keep the grey level on average
    assert (first.mean() - p.mean()).abs() < 0.005
    test = dm.split("test")[0]
    assert test.shape == (200, 1, 28, 28) and set(test.unique().tolist()) == {0, 255}
    other_seed = MNISTDataModule(
        root=str(tiny_mnist), val_size=100, download=False, binarize=True, seed=7
    )
    # the test set does not depend on data.seed
    assert torch.equal(test, other_seed.split("test")[0])


def test_tensorboard_shows_kl_per_dim_each_epoch_and_the_test_embedding(latent2_run):
    events = EventAccumulator(
        str(latent2_run / "tensorboard"), size_guidance={"histograms": 0, "scalars": 0}
    ).Reload()
    steps = [e.step for e in events.Scalars("val/loss")]
    # one x-axis: the step
    assert [e.step for e in events.Histograms("z/kl_per_dim")] == steps == [15, 31, 47]
    # the dims' KLs add up to the epoch's val/kl (both are means over the validation images)
    for hist, kl in zip(events.Histograms("z/kl_per_dim"), events.Scalars("val/kl")):
        assert abs(hist.histogram_value.sum - kl.value) < 1e-3 * max(1.0, kl.value), (
            hist.histogram_value.sum,
            kl.value,
        )
    assert len(events.Scalars("z/kl_dims_above_0.01")) == 3
    # z/active_units counts as eval does (Cov_x E_q[z_d] > 0.01),
    # here on the validation set of the last epoch
    from vae_lightning.models.metrics import active_units
    from vae_lightning.runs.checkpoints import build_datamodule, load_model

    module, config = load_model(latent2_run / "checkpoints" / "last.ckpt")
    with torch.no_grad():
        mus = torch.cat(
            [module.encode(x) for x, _ in build_datamodule(config, module).loader("val")]
        )
    assert [e.value for e in events.Scalars("z/active_units")][-1] == active_units(mus)[0]
    projector = latent2_run / "tensorboard" / "projector_config.pbtxt"
    assert "test_mu" in projector.read_text() and "sprite.png" in projector.read_text()
    folder = next((latent2_run / "tensorboard").glob("*/test_mu"))
    labels = (folder / "metadata.tsv").read_text().splitlines()
    vectors = (folder / "tensors.tsv").read_text().splitlines()
    assert len(labels) == len(vectors) == 100 and len(vectors[0].split("\t")) == 2
    assert set(labels) <= {str(k) for k in range(10)} | {
        f"{k} - {w}"
        for k, w in enumerate("zero one two three four five six seven eight nine".split())
    }


@pytest.mark.parametrize(
    "override,match",
    [
        ("model.free_bits=-1", "model.free_bits=-1 must be >= 0"),
        ("model.kl_warmup_epochs=1.5", "model.kl_warmup_epochs=1.5 must be an integer >= 0"),
        ("data.binarize=maybe", "data.binarize='maybe' must be true or false"),
        (
            "model/likelihood=gaussian model.likelihood.variance=0",
            "model.likelihood.variance=0 must be > 0",
        ),
        (
            "model/likelihood=continuous_bernoulli data.mean=0.5 data.std=0.5",
            "model/likelihood=continuous_bernoulli needs pixels in \\[0, 1\\]",
        ),
    ],
)
def test_bad_knob_values_are_refused(override, match):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=override.split())
    with pytest.raises(UserError, match=match):
        check_config(cfg)


def cpu_trainer(world_size: int = 1) -> SimpleNamespace:
    """What CpuThreads reads of a Trainer on one CPU node."""
    cpu = SimpleNamespace(root_device=torch.device("cpu"))
    return SimpleNamespace(strategy=cpu, world_size=world_size, num_nodes=1)


def test_cpu_threads_are_shared_among_the_processes_on_the_machine():
    before = torch.get_num_threads()
    try:
        CpuThreads().setup(cpu_trainer(world_size=2), None, "fit")
        assert torch.get_num_threads() == max(1, usable_cores() // 2)
        CpuThreads(threads=3).setup(cpu_trainer(), None, "fit")
        assert torch.get_num_threads() == 3
        CpuThreads().setup(cpu_trainer(), None, "fit")
        assert torch.get_num_threads() == usable_cores()  # alone on its cores: every one
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2,
    reason="needs CPU affinity and two cores",
)
def test_cpu_threads_count_the_cores_the_process_may_run_on_not_the_machines():
    """Under ``taskset``, SLURM's ``--cpus-per-task`` or a cpuset, a process may use fewer cores
    than the machine has: one thread per allowed core, not per core of the machine."""
    before, allowed = torch.get_num_threads(), os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(allowed)})
        assert usable_cores() == 1 < os.cpu_count()
        torch.set_num_threads(os.cpu_count())
        CpuThreads().setup(cpu_trainer(), None, "fit")
        assert torch.get_num_threads() == 1
    finally:
        os.sched_setaffinity(0, allowed)
        torch.set_num_threads(before)


def test_training_computes_denormal_floats_as_zero():
    """flush_denormals (the training entry point's first call): 1e-39, a float32 denormal, counts as
    0 on every torch thread; without it torch keeps it."""
    import subprocess
    import sys

    code = (
        "import torch; from vae_lightning.callbacks.threads import flush_denormals; {}"
        "t = torch.full((2_000_000,), 1e-39); print(int((t * 1.5 == 0).sum()))"
    )
    zeros = [
        int(
            subprocess.run(
                [sys.executable, "-c", code.format(call)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        for call in ("flush_denormals(); ", "")
    ]
    assert zeros == [2_000_000, 0]
    import inspect

    from vae_lightning import train

    assert "flush_denormals()" in inspect.getsource(train.main).split("boundary.run")[0]


def test_adam_normgrad_is_adam_on_each_parameters_unit_length_gradient():
    """optimizer=adam_normgrad (the VampPrior paper's code): every step, each parameter's gradient
    divided by its own L2 norm (+1e-7), then Adam. Against torch's Adam fed those gradients by
    hand; and a gradient 100x larger at the second step moves nothing, where it moves Adam."""
    from vae_lightning.optimizers import AdamNormGrad

    torch.manual_seed(0)
    grads = [[torch.randn(3, 4), torch.randn(5)] for _ in range(3)]
    grads[1] = [100 * g for g in grads[1]]

    def trained(cls, normalize_by_hand, scale_second=1.0):
        params = [torch.nn.Parameter(torch.ones(3, 4)), torch.nn.Parameter(torch.zeros(5))]
        opt = cls(params, lr=1e-2, fused=True)
        for i, step in enumerate(grads):
            for p, g in zip(params, step):
                g = g / scale_second if i == 1 else g
                p.grad = g / (g.norm() + 1e-7) if normalize_by_hand else g.clone()
            opt.step()
        return torch.cat([p.detach().flatten() for p in params])

    ours = trained(AdamNormGrad, normalize_by_hand=False)
    assert torch.allclose(ours, trained(torch.optim.Adam, normalize_by_hand=True), atol=1e-6)
    assert torch.allclose(ours, trained(AdamNormGrad, False, scale_second=100.0), atol=1e-6)
    adam = trained(torch.optim.Adam, normalize_by_hand=False)
    assert not torch.allclose(adam, trained(torch.optim.Adam, False, scale_second=100.0), atol=1e-3)


def test_adam_normgrad_trains_from_the_command_line(tiny_mnist, tmp_path):
    from tests.conftest import TINY, run_train

    run = tmp_path / "ng"
    proc = run_train(
        f"data.root={tiny_mnist}", f"hydra.run.dir={run}", *TINY, "optimizer=adam_normgrad"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["hparams"]["optimizer"] == "AdamNormGrad"
    # it learns: 221 nats here, from ~543 untrained (a fair coin per pixel)
    assert 0 < metrics["metrics"]["val/loss"] < 400, metrics
