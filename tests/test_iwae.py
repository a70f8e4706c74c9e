"""The IWAE objective (Burda et al. 2016): k=1 is the ELBO, the bound tightens with k, gradients
reach every layer."""

import json

import pytest
import torch

from tests.conftest import run_module, run_train
from vae_lightning.errors import SettingError
from vae_lightning.models import IWAE, VAE
from vae_lightning.models.metrics import iw_log_likelihood
from vae_lightning.models.schedules import iwae_paper

NET = {
    "_target_": "vae_lightning.models.networks.MLPNet",
    "hidden_dims": [64, 32],
    "activation": "tanh",
}


def module(objective: str = "iwae", k: int = 1, seed: int = 0, **settings) -> VAE:
    """model=iwae with k samples, or model=vae ("elbo"), on the same small network."""
    torch.manual_seed(seed)
    if objective == "iwae":
        return IWAE(net=NET, latent_dim=4, k=k, **settings)
    return VAE(net=NET, latent_dim=4, **settings)


def binary_images(n: int = 32, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 28, 28, generator=g) < 0.3).float()


def mean_over_draws(vae: VAE, x: torch.Tensor, key: str, draws: int) -> float:
    with torch.no_grad():
        return sum(vae.losses(x)[key].item() for _ in range(draws)) / draws


def test_iwae_with_one_sample_is_the_elbo():
    """k=1: the IW bound is the ELBO with a one-sample Monte Carlo KL; averaged over draws it meets
    the analytic ELBO."""
    x = binary_images()
    iwae, elbo = module("iwae", 1), module("elbo")
    with torch.no_grad():
        # the posterior means give the same deterministic KL in both
        assert iwae.losses(x)["kl"].item() == pytest.approx(elbo.losses(x)["kl"].item(), rel=1e-6)
        iw = torch.stack([iwae.losses(x)["iw_loss"] for _ in range(400)])
        # analytic KL, one-sample recon
        el = torch.stack([elbo.losses(x)["loss"] for _ in range(400)])
    analytic, stderr = el.mean().item(), (iw.var().item() / 400 + el.var().item() / 400) ** 0.5
    assert abs(iw.mean().item() - analytic) < 4 * stderr, (iw.mean().item(), analytic, stderr)
    # an untrained model: ~784 * 0.6 nats, so the comparison above is not trivially close
    assert analytic > 500


def test_the_bound_tightens_with_k():
    """-IW bound decreases with k (Burda et al., Theorem 1) and stays above the k=5000 estimate of
    -log p(x)."""
    x = binary_images()
    bounds = {k: mean_over_draws(module("iwae", k), x, "iw_loss", 100) for k in (1, 5, 50)}
    # Monte Carlo error of each mean ~0.04 nats; the gaps of this untrained model are
    # ~1.1 and ~0.26 nats
    assert bounds[1] > bounds[5] + 0.5 and bounds[5] > bounds[50] + 0.1, bounds
    with torch.no_grad():
        nll = -iw_log_likelihood(module("iwae", 1), x, k=5000).mean().item()
    assert bounds[50] > nll - 0.5, (bounds, nll)
    # */loss stays the negative ELBO whatever k: the same value up to Monte Carlo noise
    elbos = {k: mean_over_draws(module("iwae", k), x, "loss", 40) for k in (1, 50)}
    assert elbos[1] == pytest.approx(elbos[50], rel=2e-3)


@pytest.mark.parametrize(
    "net", [NET, {"_target_": "vae_lightning.models.networks.ConvNet", "channels": [8, 16]}]
)
def test_gradients_of_the_iw_bound_reach_encoder_and_decoder(net):
    torch.manual_seed(0)
    vae = IWAE(net=net, latent_dim=4, k=5)
    x = binary_images(8)
    out = vae.losses(x)
    assert out["objective"] is not None and torch.equal(out["objective"], out["iw_loss"])
    out["objective"].backward()
    for name, p in vae.net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert torch.isfinite(torch.cat([p.grad.flatten() for p in vae.parameters()])).all()


def test_kl_warm_up_weights_the_prior_ratio_and_leaves_iw_loss_the_true_bound():
    vae = module("iwae", 5)
    x = binary_images(8)
    torch.manual_seed(3)
    warm = vae.losses(x, kl_weight=0.0)
    torch.manual_seed(3)
    full = vae.losses(x, kl_weight=1.0)
    assert torch.equal(warm["iw_loss"], full["iw_loss"])
    assert warm["objective"].item() < full["objective"].item()  # beta=0 drops the KL-like term


def test_iwae_settings_are_checked():
    with pytest.raises(SettingError, match="k=0 must be >= 1"):
        module("iwae", 0)
    with pytest.raises(
        SettingError, match="free_bits=0.5 is not part of the IWAE bound: use model=vae"
    ):
        module("iwae", 5, free_bits=0.5)


def test_iwae_paper_schedule_follows_3_to_the_i_epochs_and_scales_to_max_epochs():
    def lrs(epochs: int, steps_per_epoch: float, steps: int) -> list[float]:
        opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1e-3)
        schedule, seen = iwae_paper(opt, epochs, steps_per_epoch=steps_per_epoch), []
        for _ in range(steps):
            seen.append(opt.param_groups[0]["lr"])
            opt.step()
            schedule.step()
        return seen

    paper = lrs(3280, 1, 3280)  # per epoch: stage i (3^i epochs) at 1e-3 * 10^(-i/7)
    stage_of_epoch = [i for i in range(8) for _ in range(3**i)]
    assert paper == pytest.approx([1e-3 * 10 ** (-i / 7) for i in stage_of_epoch], rel=1e-9)
    # 10 epochs of 328 steps: the same shape in steps, from 1e-3 down to 1e-4 in the last stage
    short = lrs(10, 328, 3280)
    assert short == pytest.approx(paper, rel=1e-9)


def test_iwae_preset_trains_and_evaluates_at_its_k(tiny_mnist, tmp_path):
    """experiment=iwae_paper_k5 runs (with the schedule squeezed into 2 epochs), logs */iw_loss
    beside */loss, and eval uses the preset's k without being told."""
    run = tmp_path / "run"
    proc = run_train(
        f"data.root={tiny_mnist}",
        f"hydra.run.dir={run}",
        "experiment=iwae_paper_k5",
        "trainer.max_epochs=2",
        "data.val_size=100",
        "eval.iw_samples=7",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    # all 7 decays of 10^(-1/7) within the 2 epochs
    assert metrics["train/lr"] == pytest.approx(1e-4, rel=1e-9)
    # a scheduled rate is a curve in TensorBoard, one point per epoch: the rate it started with
    # (the squeezed schedule is in its last stage from the second epoch on)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curve = EventAccumulator(str(run / "tensorboard")).Reload().Scalars("train/lr")
    assert [e.value for e in curve] == pytest.approx([1e-3, 1e-4], rel=1e-6)
    for stage in ("train", "val", "test"):
        # the IW bound is the tighter one
        assert metrics[f"{stage}/iw_loss"] < metrics[f"{stage}/loss"], stage
    proc = run_module(
        "vae_lightning.eval", f"ckpt_path={run}/checkpoints/last.ckpt", "eval.batch_size=50"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run / "eval.json").read_text())
    assert result["iw_samples"] == 7 and result["iw_nll"] < result["neg_elbo"]
