"""The model is a component: one file per model behind BaseVAE, priors and posteriors as components,
every model measured by the same IW estimate, and every checkpoint coming back as the class it was
trained with."""

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import TINY, run_module, run_train
from vae_lightning.data.synthetic import digit_like_images
from vae_lightning.errors import SettingError
from vae_lightning.eval import evaluate
from vae_lightning.models import HIWAE, HVAE, IWAE, VAE, BaseVAE
from vae_lightning.models.metrics import (
    compiled_log_weights,
    iw_log_likelihood,
    iw_log_mean_exp,
)
from vae_lightning.models.networks import ConvNet
from vae_lightning.models.networks.gated import GatedMLPNet
from vae_lightning.models.posteriors import GaussianPosterior, IAFPosterior
from vae_lightning.models.priors import MoGPrior, NormalPrior, VampPrior
from vae_lightning.models.two_level import TwoLevelVAE
from vae_lightning.runs.checkpoints import load_model

FIXTURES = Path(__file__).parent / "fixtures"
NET = {
    "_target_": "vae_lightning.models.networks.MLPNet",
    "hidden_dims": [64],
    "activation": "tanh",
}
MOG = {"_target_": "vae_lightning.models.priors.MoGPrior", "components": 3}
VAMP = {"_target_": "vae_lightning.models.priors.VampPrior", "components": 10, "init_std": 0.3}
IAF = {"_target_": "vae_lightning.models.posteriors.IAFPosterior", "steps": 2, "hidden_dim": 32}
SMALL_HVAE = {"latent_dims": [8, 4], "hidden_dims": [[32], [16]]}
GATED = {"_target_": "vae_lightning.models.networks.gated.GatedMLPNet", "hidden_dims": [48, 32]}
MODELS = {  # every model of the family (small sizes), as the command line would choose it
    "vae": lambda: VAE(net=NET, latent_dim=4),
    "vae+mog": lambda: VAE(net=NET, latent_dim=4, prior=MOG),
    "vae+vamp": lambda: VAE(net=NET, latent_dim=4, prior=VAMP),
    "vae+iaf": lambda: VAE(net=NET, latent_dim=4, posterior=IAF),
    "iwae": lambda: IWAE(net=NET, latent_dim=4, k=5),
    "hvae": lambda: HVAE(**SMALL_HVAE),
    "hvae+vamp": lambda: HVAE(**SMALL_HVAE, prior=VAMP),
    "hiwae": lambda: HIWAE(**SMALL_HVAE, k=5),
    "vae+gated": lambda: VAE(net=GATED, latent_dim=4),
    "two_level": lambda: TwoLevelVAE(latent_dims=[6, 4], hidden=32),
    "two_level+vamp": lambda: TwoLevelVAE(latent_dims=[6, 4], hidden=32, prior=VAMP),
}


def binary_images(n: int = 64, seed: int = 1) -> torch.Tensor:
    images, _ = digit_like_images(n, seed)
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(
        torch.tensor(images / 255.0, dtype=torch.float32), generator=g
    ).unsqueeze(1)


def test_a_one_component_mixture_at_the_standard_normal_gives_its_elbo():
    mog = MoGPrior(components=1, init_scale=0.0, latent_dim=6)
    z = 3 * torch.randn(500, 6)
    assert torch.allclose(mog.log_prob(z, None), NormalPrior(latent_dim=6).log_prob(z), atol=1e-4)
    torch.manual_seed(0)
    normal = VAE(net=NET, latent_dim=6)
    mixture = VAE(net=NET, latent_dim=6, prior={**MOG, "components": 1, "init_scale": 0.0})
    mixture.net.load_state_dict(normal.net.state_dict())
    x = binary_images(32)
    with torch.no_grad():
        # closed-form KL, one-sample recon
        analytic = torch.stack([normal.losses(x)["loss"] for _ in range(400)])
        # Monte Carlo KL on each draw
        draws = torch.stack([mixture.losses(x)["loss"] for _ in range(400)])
        assert normal.losses(x)["kl_dims"] is not None and mixture.losses(x)["kl_dims"] is None
    stderr = math.sqrt(analytic.var().item() / 400 + draws.var().item() / 400)
    assert abs(draws.mean().item() - analytic.mean().item()) < 4 * stderr, (
        draws.mean(),
        analytic.mean(),
        stderr,
    )
    assert analytic.mean().item() > 400  # an untrained model: the comparison is not trivially close


def test_the_monte_carlo_kl_of_the_vampprior_averages_to_the_integrated_kl():
    """1-D latent: KL(q(z|x) || (1/K) sum_k q(z|u_k)) by quadrature on a fine grid, against the
    model's Monte Carlo KL."""
    torch.manual_seed(0)
    model = VAE(net=NET, latent_dim=1, prior={**VAMP, "components": 5, "init_std": 0.5})
    x = binary_images(16)
    with torch.no_grad():
        model.net.fc_mu.weight.mul_(10)  # posteriors spread apart, as after training
        mu, logvar = model.net.posterior(x)
        grid = torch.linspace(-12, 12, 48001)
        # (B, G)
        log_q = -0.5 * ((grid[None] - mu) ** 2 / logvar.exp() + logvar + math.log(2 * math.pi))
        log_p = model.prior.log_prob(grid[:, None], model.net.posterior)  # (G,)
        integrated = torch.trapezoid(log_q.exp() * (log_q - log_p), grid, dim=1).mean().item()
        draws = torch.stack([model.losses(x)["kl"] for _ in range(4000)])
    stderr = draws.std().item() / math.sqrt(len(draws))
    assert integrated > 0.05  # the prior is not the posterior: a KL worth measuring
    assert abs(draws.mean().item() - integrated) < 4 * stderr, (
        draws.mean().item(),
        integrated,
        stderr,
    )


def test_a_mixture_priors_density_is_float32_under_bf16_autocast():
    """bf16-mixed training autocasts the model: the mixture's log p(z) (matrix products of z^2 and
    z with the components' precisions) must not run in bf16, where the products cancel to errors of
    hundreds of nats for narrow components (e^-6 variances, as the gated network's clip allows)
    and training learns to exploit them. The VampPrior and the mixture of Gaussians, near one
    narrow component and far from all."""
    torch.manual_seed(0)
    k, d = 50, 40
    mu, logvar = 3 + 0.5 * torch.randn(k, d), torch.full((k, d), -6.0)
    z = torch.cat([mu[:8] + 0.05 * torch.randn(8, d), 3 * torch.randn(8, d)])

    def encode(_):  # the pseudo-inputs' posteriors: fixed
        return mu, logvar

    vamp = VampPrior(components=k, latent_dim=d)
    mog = MoGPrior(components=k, latent_dim=d)
    with torch.no_grad():
        mog.means.copy_(mu), mog.logvars.copy_(logvar)
    for prior in (vamp, mog):
        exact = prior.log_prob(z, encode)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = prior.log_prob(z, encode)
        assert autocast.dtype == torch.float32
        assert exact[:8].min() > 50, exact  # near a narrow component: a high density
        assert torch.allclose(autocast, exact, rtol=1e-5, atol=1e-3), (autocast - exact).abs().max()


def test_the_fixed_vampprior_encodes_its_pseudo_inputs_once_and_gives_the_same_density():
    """Prior.fixed (eval's IW estimate): inside, log_prob reuses one encoding of the pseudo-inputs;
    the density is the one computed afresh, and outside it is computed afresh again."""
    torch.manual_seed(0)
    model = VAE(net=NET, latent_dim=4, prior=VAMP)
    encoded = []

    def encode(u):
        encoded.append(len(u))
        return model.net.posterior(u)

    z = torch.randn(7, 3, 4)
    with torch.no_grad():
        fresh = model.prior.log_prob(z, encode)
        with model.prior.fixed(encode), model.prior.fixed(encode):  # nested: still once
            inside = [model.prior.log_prob(z, encode) for _ in range(3)]
        after = model.prior.log_prob(z, encode)
    assert encoded == [10, 10, 10]  # fresh, the fixed context (once for 3 calls), after
    assert fresh.shape == (7, 3) and all(torch.equal(v, fresh) for v in inside + [after])


def test_iaf_with_zero_steps_is_the_gaussian_posterior_and_its_log_q_is_a_density():
    mu, logvar = torch.randn(5, 3), torch.randn(5, 3)
    iaf, gaussian = IAFPosterior(latent_dim=3, steps=0), GaussianPosterior(latent_dim=3)
    torch.manual_seed(2)
    z, log_q = iaf.rsample(mu, logvar, 7)
    torch.manual_seed(2)
    z_gauss, log_q_gauss = gaussian.rsample(mu, logvar, 7)
    assert torch.equal(z, z_gauss) and torch.allclose(log_q, log_q_gauss)
    # with steps, log q stays a density (the flow's log-determinant is right):
    # in 1-D, q integrates to 1 over its draws
    flow = IAFPosterior(latent_dim=1, steps=3, hidden_dim=8, gate_bias=-1.0)
    with torch.no_grad():
        z, log_q = flow.rsample(torch.zeros(1, 1), torch.zeros(1, 1), 200_000)
        order = z.flatten().argsort()
        zs, density = z.flatten()[order], log_q.flatten()[order].exp()
    assert torch.trapezoid(density, zs).item() == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_iw_estimate_bounds_its_elbo_and_tightens_with_k(name):
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    x = binary_images(48)
    with torch.no_grad():
        # a 20-draw ELBO
        draws = torch.stack([model.log_weights(x, 1)[0] for _ in range(20)])
        elbo = draws.mean().item()
        iw = {
            k: iw_log_likelihood(model, x, k, max_decodes=48 * 50).mean().item() for k in (10, 200)
        }
        iw[1] = torch.stack([iw_log_likelihood(model, x, 1) for _ in range(20)]).mean().item()
    # k=1 is the ELBO: within 1 nat, or 4 standard errors of the difference of two such means
    # (an untrained model with He's init has log-weights that spread over ~160 nats)
    error = (2 * draws.var(0).mean().item() / draws.numel()) ** 0.5
    assert abs(iw[1] - elbo) < max(1.0, 4 * error), (iw, elbo, error)
    assert iw[1] + 0.2 < iw[10] < iw[200], iw
    loss = torch.stack([model.losses(x)["loss"] for _ in range(20)]).mean().item()
    assert loss == pytest.approx(-elbo, rel=0.01)  # */loss is the negative ELBO for every model


@pytest.mark.parametrize("name", ["hvae", "two_level"])
def test_a_model_that_only_gives_its_log_weights_trains_on_their_monte_carlo_elbo(name):
    model = MODELS[name]()
    assert type(model).losses is BaseVAE.losses  # the base's: nothing else to write
    x = binary_images(16)
    torch.manual_seed(3)
    log_px_z, log_ratio = model.log_weight_terms(x, 1)
    torch.manual_seed(3)  # the same draws
    out = model.losses(x, kl_weight=0.25)
    assert out["recon"].item() == pytest.approx(-log_px_z.mean().item(), rel=1e-6)
    assert out["kl"].item() == pytest.approx(-log_ratio.mean().item(), rel=1e-6)
    assert out["loss"].item() == pytest.approx((out["recon"] + out["kl"]).item(), rel=1e-6)
    assert out["objective"].item() == pytest.approx(
        (out["recon"] + 0.25 * out["kl"]).item(), rel=1e-6
    )


@pytest.mark.parametrize("name", list(MODELS))
def test_gradients_reach_every_layer_of_every_model(name):
    torch.manual_seed(0)
    model = MODELS[name]()
    model.losses(binary_images(16))["objective"].backward()
    for key, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, key


def test_priors_and_posteriors_check_their_own_settings():
    with pytest.raises(SettingError, match=r"^prior.components=0 must be >= 1"):
        VAE(net=NET, prior={**MOG, "components": 0})
    with pytest.raises(
        SettingError,
        match=r"^prior.comps=3 is not a setting of MoGPrior: drop it with ~prior.comps",
    ):
        VAE(net=NET, prior={"_target_": MOG["_target_"], "comps": 3})
    with pytest.raises(SettingError, match=r"^posterior.steps=-1 must be >= 0"):
        VAE(net=NET, posterior={**IAF, "steps": -1})
    with pytest.raises(
        SettingError,
        match=r"^prior._target_='torch.nn.Linear' is not a prior: it must subclass "
        r"vae_lightning.models.priors.Prior",
    ):
        VAE(net=NET, prior={"_target_": "torch.nn.Linear"})
    with pytest.raises(SettingError, match=r"^free_bits=0.5 needs the KL of each latent dim"):
        VAE(net=NET, prior=VAMP, free_bits=0.5)
    with pytest.raises(
        SettingError,
        match=r"^hidden_dims=\[\[32\]\] must give one list of widths per stochastic layer",
    ):
        HVAE(latent_dims=[8, 4], hidden_dims=[[32]])
    with pytest.raises(SettingError, match=r"^model.prior.init_std=-1 must be >= 0"):
        try:
            VAE(net=NET, prior={**VAMP, "init_std": -1})
        except SettingError as e:
            raise e.under("model") from None


def fit_and_save(model: BaseVAE, path: Path) -> Path:
    """A few optimizer steps through Lightning, then the checkpoint it writes."""
    x = binary_images(32)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, torch.zeros(32)), batch_size=16
    )
    trainer = L.Trainer(
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        accelerator="cpu",
    )
    trainer.fit(model, loader)
    model.run_config = {"data": {}}  # train.py saves the run's composed config here
    trainer.save_checkpoint(path)
    return path


@pytest.mark.parametrize(
    "name", ["vae+vamp", "vae+iaf", "iwae", "hvae+vamp", "hiwae", "two_level+vamp", "beta-tcvae"]
)
def test_a_checkpoint_comes_back_as_the_class_it_was_trained_with(name, tmp_path):
    # a fork's subclass, __init__(*args, **kwargs), given Hydra's containers as values
    if name == "beta-tcvae":
        from tests.custom_models import BetaTCVAE

        model = BetaTCVAE(
            net=OmegaConf.create(NET),
            latent_dim=4,
            input_shape=OmegaConf.create([1, 28, 28]),
            tc_weight=3.0,
        )
    else:
        torch.manual_seed(0)
        model = MODELS[name]()
    path = fit_and_save(model, tmp_path / "model.ckpt")
    torch.load(path, weights_only=True)  # plain values only
    loaded, _ = load_model(path)
    # Lightning's own entry point, on the base class
    also = BaseVAE.load_from_checkpoint(path, weights_only=True)
    assert type(loaded) is type(model) is type(also)
    assert loaded.hparams == model.hparams
    x = binary_images(8)
    model.eval()
    for other in (loaded, also):
        torch.manual_seed(5)
        expected = model.log_weights(x, 3)
        torch.manual_seed(5)
        assert torch.equal(other.log_weights(x, 3), expected)
    if name == "beta-tcvae":
        assert loaded.tc_weight == 3.0 and "tc" in loaded.losses(x)


LEGACY = {  # from the checkpoints written by main before the model family (same images and seeds)
    "legacy_vae": {
        "class": VAE,
        "loss": 536.473388671875,
        "kl": 0.27842772006988525,
        "mu_sum": 1.9392297267913818,
    },
    "legacy_iwae": {
        "class": IWAE,
        "loss": 536.9149169921875,
        "kl": 0.1642143726348877,
        "mu_sum": 1.551401138305664,
        "iw_loss": 535.2219848632812,
    },
}


@pytest.mark.parametrize("name", list(LEGACY))
def test_checkpoints_of_before_the_model_family_load_with_their_numbers(name):
    expected = LEGACY[name]
    model, config = load_model(FIXTURES / f"{name}.ckpt")
    assert type(model) is expected["class"] and config["model"]["_target_"].endswith("VAEModule")
    images, _ = digit_like_images(8, 123)
    x = torch.tensor(images, dtype=torch.float32).div(255).unsqueeze(1)
    torch.manual_seed(0)
    with torch.no_grad():
        out = model.losses(x)
        assert model.encode(x).sum().item() == pytest.approx(expected["mu_sum"], rel=1e-6)
    for key in ("loss", "kl", "iw_loss"):
        if key in expected:
            assert out[key].item() == pytest.approx(expected[key], rel=1e-6), key
    assert (FIXTURES / f"{name}.ckpt").stat().st_size < 300_000


QUICK = [*TINY, "callbacks.latent_embedding.num_points=50"]


def test_a_model_and_a_prior_from_a_file_under_tests_train_evaluate_and_sample(
    tiny_mnist, tmp_path
):
    run = tmp_path / "tcvae"
    proc = run_train(
        f"data.root={tiny_mnist}",
        f"hydra.run.dir={run}",
        *QUICK,
        "model._target_=tests.custom_models.BetaTCVAE",
        "+model.tc_weight=4.0",
        "model.latent_dim=6",
        "model.net.hidden_dims=[64]",
        "model.prior._target_=tests.custom_models.LaplacePrior",
        "+model.prior.scale=0.5",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    hp = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]
    assert (
        hp["prior"] == {"_target_": "tests.custom_models.LaplacePrior", "scale": 0.5}
        and hp["tc_weight"] == 4.0
    )
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert {"train/tc", "val/tc", "test/tc"} <= set(metrics) and metrics[
        "val/loss"
    ] < 0.6 * 784 * math.log(2)
    proc = run_module(
        "vae_lightning.eval", f"ckpt_path={run}/checkpoints/last.ckpt", "eval.iw_samples=20"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run / "eval.json").read_text())
    assert (
        result["model"] == "BetaTCVAE"
        and result["iw_nll"] <= result["neg_elbo"] + 1.0
        and result["latent_dim"] == 6
    )
    proc = run_module(
        "vae_lightning.sample",
        f"ckpt_path={run}/checkpoints/last.ckpt",
        "n=16",
        f"out={tmp_path}/s.png",
    )
    assert proc.returncode == 0 and (tmp_path / "s.png").stat().st_size > 1000, proc.stderr[-3000:]


def test_the_two_layer_model_with_the_vampprior_from_the_command_line(tiny_mnist, tmp_path):
    run = tmp_path / "hvae"
    proc = run_train(
        f"data.root={tiny_mnist}",
        f"hydra.run.dir={run}",
        *QUICK,
        "model=hvae",
        "model/prior=vamp",
        "model.prior.components=20",
        "data.binarize=true",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["hparams"]["model"] == "HVAE"
    assert metrics["metrics"]["val/loss"] < 0.6 * 784 * math.log(2)
    events = EventAccumulator(str(run / "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"z/active_units", "z/active_units_z1", "z/active_units_z2"} <= tags, tags
    assert "z/kl_per_dim" not in events.Tags()["histograms"]  # no KL per dim for a Monte Carlo KL
    proc = run_module(
        "vae_lightning.eval", f"ckpt_path={run}/checkpoints/last.ckpt", "eval.iw_samples=10"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run / "eval.json").read_text())
    assert result["model"] == "HVAE" and set(result["layers"]) == {"z1", "z2"}
    assert result["layers"]["z1"]["latent_dim"] == 100 and result["latent_dim"] == 150
    assert "z1" in proc.stdout and result["iw_nll"] <= result["neg_elbo"] + 1.0
    proc = run_module(
        "vae_lightning.sample",
        f"ckpt_path={run}/checkpoints/last.ckpt",
        "n=16",
        "mode=traverse",
        f"out={tmp_path}/t.png",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_the_vampprior_papers_two_level_preset_trains_evaluates_and_samples(tiny_mnist, tmp_path):
    """experiment=vampprior_paper_hvae (Tomczak & Welling's two levels + VampPrior), small."""
    run = tmp_path / "two_level"
    proc = run_train(
        "experiment=vampprior_paper_hvae",
        f"data.root={tiny_mnist}",
        f"hydra.run.dir={run}",
        *QUICK,
        "model.hidden=32",
        "model.prior.components=20",
        "model.kl_warmup_epochs=1",
        "optimizer.lr=3e-3",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["hparams"]["model"] == "TwoLevelVAE" and metrics["epochs"] == 2
    assert metrics["metrics"]["val/loss"] < 0.6 * 784 * math.log(2)
    proc = run_module(
        "vae_lightning.eval", f"ckpt_path={run}/checkpoints/last.ckpt", "eval.iw_samples=10"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run / "eval.json").read_text())
    assert result["model"] == "TwoLevelVAE" and set(result["layers"]) == {"z1", "z2"}
    assert result["latent_dim"] == 80 and result["iw_nll"] <= result["neg_elbo"] + 1.0
    proc = run_module(
        "vae_lightning.sample",
        f"ckpt_path={run}/checkpoints/last.ckpt",
        "n=16",
        f"out={tmp_path}/s.png",
    )
    assert proc.returncode == 0 and (tmp_path / "s.png").stat().st_size > 1000, proc.stderr[-3000:]


def test_the_gated_network_gates_clips_and_starts_from_hes_init():
    from vae_lightning.models.networks.gated import GatedDense

    torch.manual_seed(0)
    layer = GatedDense(5, 3)
    x = torch.randn(4, 5)
    expected = (x @ layer.h.weight.T + layer.h.bias) * torch.sigmoid(
        x @ layer.g.weight.T + layer.g.bias
    )
    assert torch.allclose(layer(x), expected)
    net = GatedMLPNet(latent_dim=40)
    assert net.encoder[0].h.weight.std().item() == pytest.approx((2 / 784) ** 0.5, rel=0.02)
    assert net.decoder[0][0].g.weight.std().item() == pytest.approx((2 / 40) ** 0.5, rel=0.05)
    with torch.no_grad():
        net.fc_logvar.bias.fill_(50.0)
        _, logvar = net.encode(torch.rand(2, 1, 28, 28))
    assert logvar.max().item() == 2.0  # the paper's hard tanh at [-6, 2]
    assert net.decode(torch.randn(2, 40)).shape == (2, 1, 28, 28)
    with pytest.raises(SettingError, match="logvar_min"):
        GatedMLPNet(logvar_min=3.0)


def test_every_model_and_part_composes_from_the_command_line():
    from hydra import compose, initialize_config_dir

    from tests.conftest import REPO

    cases = {
        ("model=iwae",): ("IWAE", {"k": 5}),
        ("model=hiwae", "model.k=50"): ("HIWAE", {"k": 50}),
        ("model/prior=mog",): ("VAE", {"prior": MoGPrior}),
        ("model/posterior=iaf",): ("VAE", {"posterior": IAFPosterior}),
        ("model=hvae", "model/prior=vamp"): ("HVAE", {"prior": VampPrior}),
        ("experiment=iwae_paper_k50",): ("IWAE", {"k": 50, "latent_dim": 50}),
        ("experiment=iwae_paper_hvae",): (
            "HVAE",
            {"latent_dims": [100, 50], "hidden_dims": [[100, 100], [50, 50]], "activation": "tanh"},
        ),
        ("experiment=iwae_paper_hiwae_k50",): ("HIWAE", {"k": 50, "latent_dims": [100, 50]}),
        ("experiment=vampprior_paper_vae",): ("VAE", {"net": GatedMLPNet, "prior": NormalPrior}),
        ("experiment=vampprior_paper_vamp",): ("VAE", {"net": GatedMLPNet, "prior": VampPrior}),
        ("experiment=mnist_one_hour",): (
            "VAE",
            {"net": ConvNet, "prior": VampPrior, "latent_dim": 40, "kl_warmup_epochs": 10},
        ),
        ("experiment=vampprior_paper_hvae",): (
            "TwoLevelVAE",
            {"latent_dims": [40, 40], "hidden": 300, "prior": VampPrior},
        ),
    }
    for overrides, (cls, expected) in cases.items():
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=list(overrides))
        from hydra.utils import instantiate

        model = instantiate(cfg.model)
        assert type(model).__name__ == cls, overrides
        if overrides[0].startswith("experiment=iwae_paper"):  # the paper's data and optimization
            assert cfg.data.binarize and cfg.data.batch_size == 20 and cfg.optimizer.eps == 1e-4
            assert cfg.scheduler._target_.endswith(".iwae_paper") and cfg.scheduler.epochs == 3280
            assert cfg.trainer.max_epochs == 3280 and cfg.eval.iw_samples == 5000
        if overrides[0] == "experiment=mnist_one_hour":  # README's one-CPU-hour row
            assert cfg.data.binarize and cfg.data.batch_size == 100 and cfg.eval.iw_samples == 5000
            assert (
                cfg.scheduler._target_.endswith("CosineAnnealingLR") and cfg.scheduler.T_max == 100
            )
            assert cfg.trainer.max_epochs == 100 and len(model.prior.pseudo_inputs) == 500
        if overrides[0].startswith("experiment=vampprior_paper"):  # Tomczak & Welling's code
            assert cfg.data.binarize and cfg.data.batch_size == 100 and cfg.data.val_size == 10000
            assert cfg.optimizer.lr == 5e-4 and cfg.model.kl_warmup_epochs == 100
            assert cfg.optimizer._target_.endswith(".AdamNormGrad")
            stopping = cfg.callbacks.early_stopping  # 51 epochs without improvement, warm-up not
            assert stopping.patience == 51 and stopping.kl_warmup_epochs == 100  # counted
            assert cfg.trainer.max_epochs == 2000
            assert cfg.eval.iw_samples == 5000 and model.latent_dim == 40
            if isinstance(model.prior, VampPrior):
                assert len(model.prior.pseudo_inputs) == 500
        for key, value in expected.items():
            if isinstance(value, type):
                assert isinstance(getattr(model, key), value), (overrides, key)
            else:
                assert model.hparams[key] == value, (overrides, key)


def briefly_trained(name: str, steps: int) -> tuple[BaseVAE, torch.Tensor]:
    """A model of MODELS (or the tutorial MLP) after ``steps`` Adam steps on 32 binary images,
    in eval mode, and the images."""
    torch.manual_seed(0)
    model = VAE(latent_dim=20) if name == "tutorial" else MODELS[name]()
    x = binary_images(32)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        model.losses(x)["objective"].backward()
        optimizer.step()
    return model.eval(), x


@pytest.mark.parametrize("name", [*MODELS, "tutorial"])
def test_the_bf16_iw_path_agrees_with_float32_within_five_hundredths_of_a_nat(name):
    """eval.precision=bf16-mixed (the default on a CPU with native bf16) against 32-true, the same
    draws, every model of the family briefly trained: the mean estimate moves by < 0.05 nats."""
    model, x = briefly_trained(name, steps=60)
    estimates = {}
    for precision in ("32-true", "bf16-mixed"):
        torch.manual_seed(1)
        iw = iw_log_likelihood(model, x, 100, max_decodes=32 * 50, precision=precision)
        assert iw.dtype == torch.float32
        estimates[precision] = iw.mean().item()
    assert estimates["32-true"] > -300, estimates  # trained: far from the untrained ~-540
    assert 0 < abs(estimates["bf16-mixed"] - estimates["32-true"]) < 0.05, estimates  # bf16 ran


def test_a_subclass_that_overrides_log_weight_terms_is_what_eval_estimates():
    """A researcher's subclass of VAE, HVAE or TwoLevelVAE that overrides ``log_weight_terms``
    alone: eval's estimate runs that override, not the parent's split (per_image +
    log_weight_terms_from), and the parent keeps its split."""

    class Shifted(VAE):  # every log-weight 7 nats higher: log p(x) moves by exactly 7
        def log_weight_terms(self, x, n):
            log_px_z, log_ratio = super().log_weight_terms(x, n)
            return log_px_z + 7.0, log_ratio

    assert VAE.split_draws and HVAE.split_draws and TwoLevelVAE.split_draws
    assert IWAE.split_draws and not Shifted.split_draws
    torch.manual_seed(0)
    parent = VAE(net=NET, latent_dim=4).eval()
    child = Shifted(net=NET, latent_dim=4).eval()
    child.load_state_dict(parent.state_dict())
    x = binary_images(8)
    estimates = []
    for model in (parent, child):
        torch.manual_seed(1)
        estimates.append(iw_log_likelihood(model, x, 20, max_decodes=8 * 10))
    assert torch.allclose(estimates[1] - estimates[0], torch.full((8,), 7.0), atol=1e-4)


@pytest.mark.parametrize("name", [*MODELS, "tutorial"])
def test_the_iw_estimate_agrees_with_the_plain_float32_pass_on_the_same_draws(name):
    """eval's estimate against the pass it replaced: ``model.log_weights`` outside ``estimating``
    (every network rerun per chunk, torch's per-pixel likelihood, float32), chunk by chunk with
    the same seed, so the same draws. Encoding each batch once (``per_image``) and the
    likelihood's ``estimate_log_prob`` move it by float32 rounding alone; bf16 by < 0.05 nats."""
    model, x = briefly_trained(name, steps=30)
    k, chunk = 60, 20
    torch.manual_seed(3)
    with torch.no_grad():
        plain = iw_log_mean_exp(lambda n: model.log_weights(x, n), k, chunk).mean().item()
    estimates = {}
    for precision in ("32-true", "bf16-mixed"):
        torch.manual_seed(3)
        iw = iw_log_likelihood(model, x, k, max_decodes=chunk * len(x), precision=precision)
        estimates[precision] = iw.mean().item()
    assert plain > -400, plain  # trained: far from the untrained ~-540
    assert abs(estimates["32-true"] - plain) < 1e-3, (plain, estimates)
    assert abs(estimates["bf16-mixed"] - plain) < 0.05, (plain, estimates)


@pytest.mark.parametrize("name", [*MODELS, "tutorial"])
def test_eval_computes_the_elbo_in_float32_whatever_the_iw_paths_precision(name):
    """vae_lightning.eval's negative ELBO is float32 for every model, the Monte Carlo ELBOs of the
    hierarchical models and the VampPrior included: with the same draws, eval.precision=bf16-mixed
    gives the very ELBO terms of 32-true, and only the IW estimate moves."""
    model, x = briefly_trained(name, steps=60)
    results = {}
    for precision in ("32-true", "bf16-mixed"):
        torch.manual_seed(2)
        results[precision] = evaluate(model, [(x, None)], 50, 32 * 25, precision=precision)
    fp32, bf16 = results["32-true"], results["bf16-mixed"]
    assert 0 < fp32["neg_elbo"] < 784 * math.log(2), fp32
    assert [bf16[k] for k in ("neg_elbo", "recon", "kl")] == [
        fp32[k] for k in ("neg_elbo", "recon", "kl")
    ]
    assert 0 < abs(bf16["iw_nll"] - fp32["iw_nll"]) < 0.05, (bf16, fp32)  # bf16 ran there


def test_the_two_level_models_per_draw_networks_run_in_bf16_and_its_densities_in_float32():
    """Half of a two-level draw's matrix products are its latent layers' (q(z_1 | x, z_2),
    p(z_1 | z_2)): eval's bf16 path runs them in bf16 too (the IW estimate at k = 5000: 8.2 ->
    4.7 min per 10 000 images here); the draws of z_1 and every density stay float32."""
    model, x = briefly_trained("two_level", steps=5)
    seen = {}

    def record(name):
        def hook(module, inputs, out):  # returns None: the output stays as it is
            outs = out if isinstance(out, tuple) else (out,)
            seen.setdefault(name, [o.dtype for o in outs])

        return hook

    for name in ("q_z1_heads", "p_z1", "p_x"):  # p_x: what the pixels' product takes
        getattr(model, name).register_forward_hook(record(name))
    with model.estimating("bf16-mixed"):
        log_px_z, log_ratio = model.log_weight_terms(x, 3)
    assert seen == {
        "q_z1_heads": [torch.bfloat16] * 2,
        "p_z1": [torch.bfloat16] * 2,
        "p_x": [torch.bfloat16],
    }
    assert log_px_z.dtype == log_ratio.dtype == torch.float32
    seen.clear()
    model.log_weight_terms(x, 3)  # outside eval's estimate (training, by default): float32
    assert set(seen["p_z1"]) == {torch.float32}


def test_the_two_level_estimate_runs_xs_half_of_q_z1_once_per_image_with_the_same_result():
    """eval's estimate computes x's share of q(z_1 | x, z_2)'s joint layer once per image
    (``Joint.first_share``) and adds it at each draw of z_2 (``Joint.given``): in float32 that is
    the joint layer on the concatenated features (``forward``), to rounding."""
    model, x = briefly_trained("two_level", steps=5)
    torch.manual_seed(3)
    flat, z2 = x.flatten(1), torch.randn(7, len(x), model.latent_dims[1])  # 7 draws per image
    with torch.no_grad():
        split = model.q_z1.given(model.q_z1.first_share(model.q_z1.a(flat)), z2)
        whole = model.q_z1(flat.expand(7, *flat.shape), z2)
    assert split.shape == whole.shape == (7, len(x), model.q_z1.joint.h.out_features)
    assert whole.abs().mean() > 0.1
    torch.testing.assert_close(split, whole, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["tutorial", "vae+vamp", "hvae+vamp", "two_level"])
def test_the_compiled_iw_path_takes_the_same_draws_and_agrees_within_a_hundredth_of_a_nat(name):
    """eval.compile (torch.compile of log_weights, bf16 decoder) against the eager bf16 path, the
    same seed: torch's own random numbers (fallback_random), so the two differ by arithmetic
    alone; the VampPrior's pseudo-inputs are encoded once for all chunks (Prior.fixed)."""
    model, x = briefly_trained(name, steps=30)
    estimates = {}
    with model.estimating("bf16-mixed"):
        compiled = compiled_log_weights(model)
        for path, log_weights in (("eager", None), ("compiled", compiled)):
            torch.manual_seed(1)
            iw = iw_log_likelihood(model, x, 100, 32 * 25, "bf16-mixed", log_weights)
            estimates[path] = iw.mean().item()
    assert estimates["eager"] > -400, estimates  # trained: far from the untrained ~-540
    assert abs(estimates["compiled"] - estimates["eager"]) < 0.01, estimates
