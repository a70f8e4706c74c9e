"""Evaluation: the IW bound, active units, checkpoint loading and the eval entry point."""

import json
import math
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, run_module
from vae_lightning.data.in_memory import normalize
from vae_lightning.errors import UserError
from vae_lightning.models.metrics import active_units, iw_log_likelihood, iw_log_mean_exp
from vae_lightning.runs.checkpoints import build_datamodule, load_model


def test_chunked_logsumexp_equals_one_pass_and_never_overflows():
    torch.manual_seed(0)
    # exp(-2000) underflows: only logsumexp survives
    w = torch.randn(37, 3, dtype=torch.float64) * 5 - 2000
    drawn = []

    def weights(n):
        part = w[sum(drawn) : sum(drawn) + n]
        drawn.append(n)
        return part

    got = iw_log_mean_exp(weights, k=37, chunk=5)
    assert drawn == [5] * 7 + [2]
    assert torch.allclose(got, torch.logsumexp(w, 0) - math.log(37))
    small = w + 2000  # where exp is representable, it is log(mean(exp(w)))
    assert torch.allclose(
        iw_log_mean_exp(lambda n: small[:n], k=37, chunk=37), small.exp().mean(0).log()
    )


def test_active_units_counts_dims_whose_posterior_means_vary():
    torch.manual_seed(0)
    n = 5000
    # variances 1, 0.25, 0.04, 0.0025, 0
    mu = torch.stack(
        [
            torch.randn(n),
            0.5 * torch.randn(n),
            0.2 * torch.randn(n),
            0.05 * torch.randn(n),
            torch.full((n,), 3.0),
        ],
        1,
    )
    count, variance = active_units(mu)
    assert count == 3
    assert torch.allclose(
        variance, torch.tensor([1.0, 0.25, 0.04, 0.0025, 0.0]), rtol=0.1, atol=1e-6
    )


@pytest.fixture(scope="module")
def loaded(latent2_run):
    module, config = load_model(latent2_run / "checkpoints" / "last.ckpt")
    images, _ = build_datamodule(config, module).split("test")
    return module, normalize(images)


def test_iw_estimate_tightens_as_k_grows_and_bounds_the_elbo(loaded):
    module, x = loaded
    torch.manual_seed(0)
    with torch.no_grad():  # 200 test images; the gaps below are > 1 nat, the noise ~0.2
        elbo = -torch.stack([module.losses(x)["loss"] for _ in range(10)]).mean().item()
        iw = {
            k: iw_log_likelihood(module, x, k, max_decodes=5000).mean().item() for k in (1, 3, 30)
        }
    assert abs(iw[1] - elbo) < 1.0, (iw, elbo)  # k=1 is a one-sample ELBO
    assert iw[1] < iw[3] < iw[30], iw
    assert iw[30] >= elbo + 1.0, (iw, elbo)


def test_iw_estimate_does_not_depend_on_the_chunk_size(loaded):
    """The two estimates draw different z, so they differ per image by Monte-Carlo noise (~1 nat
    here); over the 200 test images the mean difference is ~0 (its standard error ~0.07) unless
    chunking biases it."""
    module, x = loaded
    torch.manual_seed(1)
    one_pass = iw_log_likelihood(module, x, 60, max_decodes=60 * len(x))
    torch.manual_seed(1)
    chunked = iw_log_likelihood(module, x, 60, max_decodes=7 * len(x))  # 9 chunks of <= 7
    diff = one_pass - chunked
    assert abs(diff.mean()) < 0.25, (diff.mean(), diff.std())
    assert diff.abs().mean() < 2.0, diff.abs().mean()  # same estimator, same noise level


def test_eval_entry_point_writes_eval_json_and_prints_a_table(latent2_run):
    proc = run_module(
        "vae_lightning.eval",
        f"ckpt_path={latent2_run}/checkpoints/last.ckpt",
        "eval.iw_samples=200",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((latent2_run / "eval.json").read_text())  # default place: the run folder
    assert result["n_images"] == 200 and result["iw_samples"] == 200 and result["split"] == "test"
    assert result["neg_elbo"] == pytest.approx(result["recon"] + result["kl"], rel=1e-6)
    assert 0 < result["iw_nll"] < result["neg_elbo"] < 784 * math.log(2)
    assert result["latent_dim"] == 2 and result["active_units"] == sum(
        v > 0.01 for v in result["unit_variance"]
    )
    for row in ("negative ELBO", "-log p(x), IW k=200", "active units", "wall time"):
        assert row in proc.stdout
    # it says what it computes, and how far it is (its last progress line: all done)
    ckpt = latent2_run / "checkpoints" / "last.ckpt"
    assert f"evaluating {ckpt} on the test set (2 batches" in proc.stderr
    assert "k=200" in proc.stderr and "  200 images (2/2 batches)" in proc.stderr, proc.stderr
    assert result["checkpoint"] == str(ckpt)
    # the IW estimate's networks: bf16 where this CPU has it natively (the default), else float32;
    # the same draws in float32 give the same estimate within 0.05 nats
    from vae_lightning.resolvers import auto_precision

    assert result["precision"] == auto_precision("cpu") and f"in {result['precision']})" in (
        proc.stderr
    )
    # eval.compile: auto leaves 200 images x k=200 eager (a compile would cost more than it saves)
    assert result["compiled"] is False and "compiled" not in proc.stderr

    def evaluated(setting: str) -> tuple[dict, str]:
        out = latent2_run / f"eval_{setting.split('=')[1]}.json"
        proc = run_module(
            "vae_lightning.eval",
            f"ckpt_path={ckpt}",
            "eval.iw_samples=200",
            setting,
            f"eval.out={out}",
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(out.read_text()), proc.stderr

    fp32, _ = evaluated("eval.precision=32-true")
    assert fp32["precision"] == "32-true" and fp32["neg_elbo"] == result["neg_elbo"]
    assert fp32["iw_nll"] == pytest.approx(result["iw_nll"], abs=0.05)
    # compiled, the estimate takes the same draws and moves by arithmetic alone
    compiled, stderr = evaluated("eval.compile=true")
    assert compiled["compiled"] is True and ", compiled) and the active units" in stderr
    assert "warning" not in stderr, stderr[-3000:]  # no fallback to eager
    assert compiled["iw_nll"] == pytest.approx(result["iw_nll"], abs=0.01)
    assert compiled["neg_elbo"] == result["neg_elbo"]


def test_a_compile_that_fails_falls_back_to_eager_and_a_model_error_keeps_its_traceback(capsys):
    from vae_lightning.eval import first_call_or_eager

    calls = []

    def broken_compile(x, n):
        raise RuntimeError("inductor cannot build this")

    def eager(x, n):
        calls.append(n)
        return torch.full((n, len(x)), -1.0)

    log_weights = first_call_or_eager(broken_compile, eager)
    assert log_weights(torch.zeros(3), 2).shape == (2, 3)
    assert log_weights(torch.zeros(3), 4).shape == (4, 3)
    assert calls == [2, 4]
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "warning: eval.compile: torch.compile failed (RuntimeError); estimating without it "
        "(eval.compile=false skips trying)"
    ]

    def model_bug(x, n):
        raise ZeroDivisionError("the researcher's own bug")

    with pytest.raises(ZeroDivisionError, match="own bug"):
        first_call_or_eager(model_bug, model_bug)(torch.zeros(3), 2)


def test_missing_checkpoint_is_one_line(tmp_path):
    with pytest.raises(
        UserError, match=r"ckpt_path=.*nope.ckpt does not exist: .*checkpoints/last.ckpt"
    ):
        load_model(tmp_path / "nope.ckpt")
    proc = run_module("vae_lightning.eval", f"ckpt_path={tmp_path}/nope.ckpt")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"error: ckpt_path={tmp_path}/nope.ckpt does not exist")


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(UserError, match=r"ckpt_path=.*notes.ckpt is not a readable checkpoint"):
        load_model(text)
    weights = tmp_path / "weights.pt"
    # a torch file, but not one train.py wrote
    torch.save(torch.nn.Linear(2, 2).state_dict(), weights)
    with pytest.raises(
        UserError, match=r"weights.pt is not a vae_lightning checkpoint \(no state_dict"
    ):
        load_model(weights)


def test_overrides_that_conflict_with_the_checkpoint_are_refused(latent2_run, tmp_path):
    ckpt = latent2_run / "checkpoints" / "last.ckpt"
    with pytest.raises(
        UserError,
        match=r"data.mean=0.5 data.std=0.5 put pixels in \[-1, 1\] .* trained on \[0, 1\]",
    ):
        load_model(ckpt, overrides={"data.mean": 0.5, "data.std": 0.5})
    with pytest.raises(
        UserError,
        match=r"model.latent_dim=20 conflicts with .*fixes the model \(model.latent_dim=2\)",
    ):
        load_model(ckpt, overrides={"model.latent_dim": 20})
    module, config = load_model(ckpt, overrides={"data.root": str(tmp_path), "data.binarize": True})
    assert config["data"]["root"] == str(tmp_path) and config["data"]["binarize"] is True
    assert config["model"]["latent_dim"] == 2 and not module.training


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("iw_samples", 0, r"eval.iw_samples=0 must be >= 1, e.g. eval.iw_samples=1000"),
        (
            "batch_size",
            "abc",
            r"eval.batch_size='abc' must be an integer >= 1, e.g. eval.batch_size=100",
        ),
        ("max_decodes", True, r"eval.max_decodes=True must be an integer >= 1"),
    ],
)
def test_eval_settings_are_checked_before_anything_loads(key, value, message):
    from omegaconf import OmegaConf

    from vae_lightning import eval as eval_entry

    settings = {
        "iw_samples": 10,
        "batch_size": 100,
        "max_decodes": 1000,
        "split": "test",
        key: value,
    }
    cfg = OmegaConf.create({"eval": settings, "ckpt_path": "/nonexistent.ckpt"})
    with pytest.raises(UserError, match=message):
        eval_entry.run(cfg)


def test_the_iw_speed_benchmark_runs_each_path_on_the_same_draws(latent2_run):
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "iw_speed.py"),
            str(latent2_run / "checkpoints" / "last.ckpt"),
            "--images=50",
            "--k=20",
            "--paths=32-true:1000,32-true:200,bf16-mixed:200",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if "max_decodes=" in line]
    estimates = [float(row.rsplit(" ", 1)[1]) for row in rows]
    assert len(rows) == 3 and estimates[0] == pytest.approx(estimates[1], abs=1e-3)
    assert estimates[2] == pytest.approx(estimates[0], abs=0.05)
