"""Bad input from the command line, for every entry point: exit code 2, one line naming the setting or file
and the fix, no traceback, nothing written or overwritten.

The cases run one after another in a single Python process (each as ``python -m vae_lightning.<entry> <args>``,
via runpy), which costs one interpreter start, not ninety. Cases refused by the preflight (composition, every
component's own checks, torch's and Lightning's checks of their settings) must print exactly one line and
leave no run folder behind; the others fail later (data files, checkpoints, divergence) with the same one line
at the end of stderr.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import REPO, TINY, make_mnist_root
from tests.launcher import command_env
from vae_lightning.data.download import reachable
from vae_lightning.data.mnist import DATASETS

DRIVER = """
import contextlib, io, json, os, runpy, sys
from hydra.core.global_hydra import GlobalHydra
results = []
for module, args, env in json.loads(sys.argv[1]):
    GlobalHydra.instance().clear()
    os.environ.pop("HYDRA_FULL_ERROR", None)
    os.environ.update(env)
    sys.argv, err, code = [module, *args], io.StringIO(), 0
    with contextlib.redirect_stderr(err):
        try:
            runpy.run_module(module, run_name="__main__")
        except SystemExit as e:
            code = e.code
        except BaseException as e:  # raised out of main: what the user would see as a traceback
            import traceback
            traceback.print_exc(file=err)
            code = 1
    results.append({"code": code, "stderr": err.getvalue()})
print(json.dumps(results))
"""

TRAIN, EVAL, SAMPLE, SUMMARIZE = (f"vae_lightning.{m}" for m in ("train", "eval", "sample", "summarize"))


def run_cases(cases: list[tuple[str, list[str], dict]]) -> list[dict]:
    env = command_env()
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(cases)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def damaged_root(root: Path, damage) -> Path:
    make_mnist_root(root, n_train=300, n_test=100)
    damage(root / "MNIST" / "raw" / "train-images-idx3-ubyte")
    return root


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:5000])


def wrong_magic(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[2] = 0x0D  # float32 instead of uint8
    path.write_bytes(bytes(data))


def make_files(tmp: Path) -> None:
    """The files the table's cases point at."""
    (tmp / "a_file").write_text("not a folder\n")
    earlier = tmp / "earlier_run"
    (earlier / "checkpoints").mkdir(parents=True)
    (earlier / "checkpoints" / "last.ckpt").write_bytes(b"precious weights")
    (earlier / "metrics.json").write_text('{"metrics": {"val/loss": 101.5}}\n')
    np.savez(tmp / "floats.npz", x_train=np.full((50, 8, 8), 2.0, np.float32))
    np.savez(tmp / "whole.npz", x_train=(np.random.default_rng(0).random((50, 8, 8)) * 255).astype(np.uint8))
    whole = (tmp / "whole.npz").read_bytes()
    (tmp / "cut.npz").write_bytes(whole[: len(whole) // 2])  # a copy that stopped halfway
    flipped = bytearray(whole)
    flipped[len(whole) // 2: len(whole) // 2 + 40] = b"\xff" * 40  # damaged inside: its CRC fails
    (tmp / "flipped.npz").write_bytes(bytes(flipped))
    np.savez(tmp / "no_x.npz", images=np.zeros((5, 8, 8), np.uint8))
    np.savez(tmp / "masks.npz", x_train=(np.random.default_rng(0).random((50, 8, 8)) > 0.5).astype(np.uint8))
    nan = np.random.default_rng(0).random((50, 8, 8)).astype(np.float32)
    nan[3, 4, 5] = np.nan
    np.savez(tmp / "nan.npz", x_train=nan)
    np.savez(tmp / "colour.npz", x_train=np.random.default_rng(0).integers(0, 256, (50, 32, 32, 3), dtype=np.uint8))
    damaged_root(tmp / "trunc", truncate)
    damaged_root(tmp / "magic", wrong_magic)


def table(tiny_mnist: Path, tmp: Path, ckpt: Path) -> dict[str, tuple[str, list[str], str, str]]:
    """name -> (entry point, args, expected fragment of the error line, 'preflight' or 'run'). Pure: the files
    it names are made by make_files(tmp)."""
    a_file, earlier, npz, no_x = tmp / "a_file", tmp / "earlier_run", tmp / "floats.npz", tmp / "no_x.npz"
    root, missing, ck = f"data.root={tiny_mnist}", tmp / "no_such_folder", f"ckpt_path={ckpt}"
    pre, run = "preflight", "run"
    t = {
        # numbers out of range, of the wrong type, NaN / inf
        "latent_dim=0": (TRAIN, [root, "model.latent_dim=0"], "model.latent_dim=0 must be >= 1, e.g. model.latent_dim=20", pre),
        "latent_dim=-3": (TRAIN, [root, "model.latent_dim=-3"], "model.latent_dim=-3 must be >= 1", pre),
        "latent_dim=abc": (TRAIN, [root, "model.latent_dim=abc"], "model.latent_dim='abc' must be an integer >= 1", pre),
        "latent_dim=2.5": (TRAIN, [root, "model.latent_dim=2.5"], "model.latent_dim=2.5 must be an integer >= 1", pre),
        "lr=0": (TRAIN, [root, "optimizer.lr=0"], "optimizer.lr=0 must be > 0, e.g. optimizer.lr=1e-3", pre),
        "lr=-1": (TRAIN, [root, "optimizer.lr=-1"], "optimizer.lr=-1 must be > 0, e.g. optimizer.lr=1e-3", pre),
        "lr=nan": (TRAIN, [root, "optimizer.lr=nan"], "optimizer.lr=nan must be a finite number > 0", pre),
        "lr=inf": (TRAIN, [root, "optimizer.lr=inf"], "optimizer.lr=inf must be a finite number > 0", pre),
        "weight_decay=-1": (TRAIN, [root, "optimizer.weight_decay=-1"], "optimizer.weight_decay=-1 is refused: Invalid weight_decay value: -1", pre),
        "adamw eps=-1": (TRAIN, [root, "optimizer=adamw", "optimizer.eps=-1"], "optimizer.eps=-1 is refused: Invalid epsilon value: -1", pre),
        "batch_size=0": (TRAIN, [root, "data.batch_size=0"], "data.batch_size=0 must be >= 1, e.g. data.batch_size=64", pre),
        "batch_size=1.5": (TRAIN, [root, "data.batch_size=1.5"], "data.batch_size=1.5 must be an integer >= 1", pre),
        "eval_batch_size=0": (TRAIN, [root, "data.eval_batch_size=0"], "data.eval_batch_size=0 must be >= 1 (or null), e.g. data.eval_batch_size=1000", pre),
        "val_size=0": (TRAIN, [root, "data.val_size=0"], "data.val_size=0 must be >= 1", pre),
        "val_size too big": (TRAIN, [root, "data.val_size=600"], "data.val_size=600 must lie between 1 and 599", run),
        "std=0": (TRAIN, [root, "data.std=0"], "data.std=0 must be > 0, e.g. data.std=1", pre),
        "std=inf": (TRAIN, [root, "data.std=inf"], "data.std=inf must be a finite number > 0", pre),
        "mean=nan": (TRAIN, [root, "data.mean=nan"], "data.mean=nan must be a finite number", pre),
        "mean per channel, wrong count": (TRAIN, [root, "data.mean=[0.1,0.2]"], "data.mean=[0.1, 0.2] must be one number or 1 (one per channel)", pre),
        "binarize=maybe": (TRAIN, [root, "data.binarize=maybe"], "data.binarize='maybe' must be true or false", pre),
        "download=maybe": (TRAIN, [root, "data.download=maybe"], "data.download='maybe' must be true or false", pre),
        "data seed=-1": (TRAIN, [root, "data.seed=-1"], "data.seed=-1 must be >= 0", pre),
        "loss=mse": (TRAIN, [root, "model.loss=mse"], "model.loss is now the likelihood component: use model/likelihood=bernoulli (was bce), continuous_bernoulli (cb) or gaussian (mse)", pre),
        "+loss=mse": (TRAIN, [root, "+model.loss=mse"], "model.loss='mse' is now chosen as the likelihood component: use model/likelihood=bernoulli", pre),
        "likelihood=foo": (TRAIN, [root, "model/likelihood=foo"], "model/likelihood=foo is not a model/likelihood option: choose one of bernoulli, continuous_bernoulli, discretized_logistic", pre),
        "components=0": (TRAIN, [root, "model/likelihood=logistic_mixture", "model.likelihood.components=0"], "model.likelihood.components=0 must be >= 1, e.g. model.likelihood.components=10", pre),
        "variance=-1": (TRAIN, [root, "model/likelihood=gaussian", "model.likelihood.variance=-1"], "model.likelihood.variance=-1 must be > 0", pre),
        "logvar bounds crossed": (TRAIN, [root, "model/likelihood=learned_gaussian", "model.likelihood.max_logvar=-8"], "model.likelihood.max_logvar=-8 must be above min_logvar=-7", pre),
        "discrete on binarized": (TRAIN, [root, "model/likelihood=discretized_logistic", "data.binarize=true"], "model/likelihood=discretized_logistic is a distribution over the 256 levels of 8-bit pixels, but the data's pixels take 2 values (data.binarize=true): use data.binarize=false, or model/likelihood=bernoulli", pre),
        "net without output_channels": (TRAIN, [root, "model/likelihood=learned_gaussian", "model.net._target_=tests.custom_net.ResidualMLPNet"], "model.net._target_=tests.custom_net.ResidualMLPNet decodes one output per image channel, but model/likelihood=learned_gaussian needs 2 per pixel: give the network's __init__ an output_channels argument", pre),
        "kl_weight=-1": (TRAIN, [root, "model.kl_weight=-1"], "model.kl_weight=-1 must be >= 0 (1 is the ELBO", pre),
        "kl_weight=nan": (TRAIN, [root, "model.kl_weight=nan"], "model.kl_weight=nan must be a finite number >= 0", pre),
        "free_bits=-1": (TRAIN, [root, "model.free_bits=-1"], "model.free_bits=-1 must be >= 0", pre),
        "kl_warmup_epochs=1.5": (TRAIN, [root, "model.kl_warmup_epochs=1.5"], "model.kl_warmup_epochs=1.5 must be an integer >= 0", pre),
        "compile=maybe": (TRAIN, [root, "model.compile=maybe"], "model.compile='maybe' must be true or false", pre),
        "max_epochs=-2": (TRAIN, [root, "trainer.max_epochs=-2"], "trainer.max_epochs=-2 must be >= -1 (-1 trains until stopped)", pre),
        "max_epochs=abc": (TRAIN, [root, "trainer.max_epochs=abc"], "trainer.max_epochs='abc' must be an integer >= -1", pre),
        "seed=-1": (TRAIN, [root, "seed=-1"], "seed=-1 must be >= 0, e.g. seed=42", pre),
        "seed too big": (TRAIN, [root, "seed=99999999999"], "seed=99999999999 must be <= 4294967295 (numpy's seed range)", pre),
        "seed=abc": (TRAIN, [root, "seed=abc"], "seed='abc' must be an integer >= 0", pre),
        "resume=maybe": (TRAIN, [root, "resume=maybe"], "resume='maybe' must be true or false", pre),
        "test=maybe": (TRAIN, [root, "test=maybe"], "test='maybe' must be true or false", pre),
        # combinations that used to fail only after training started
        "check_val_every_n_epoch=0": (TRAIN, [root, "trainer.check_val_every_n_epoch=0"], "trainer.check_val_every_n_epoch=0 must be >= 1", pre),
        "plateau without validation": (TRAIN, [root, "scheduler=plateau", "trainer.limit_val_batches=0"],
                                       "scheduler=plateau follows val/loss, but validation never runs", pre),
        "cosine without a length": (TRAIN, [root, "scheduler=cosine", "trainer.max_epochs=-1"], "scheduler.T_max=-1 must be an integer >= 1", pre),
        "bce on [-1, 1]": (TRAIN, [root, "data.mean=0.5", "data.std=0.5"], "model/likelihood=bernoulli needs pixels in [0, 1]", pre),
        "cb on [-1, 1]": (TRAIN, [root, "model/likelihood=continuous_bernoulli", "data.mean=0.5", "data.std=0.5"], "model/likelihood=continuous_bernoulli needs pixels in [0, 1]", pre),
        "resume and ckpt_path": (TRAIN, [root, "resume=true", f"ckpt_path={ckpt}"], "resume=true continues this run folder's last.ckpt", pre),
        # Lightning's own settings
        "accelerator=gpu without a GPU": (TRAIN, [root, "trainer.accelerator=gpu"], "trainer.accelerator=gpu but torch sees no GPU on this machine: use trainer.accelerator=cpu", pre),
        "precision=banana": (TRAIN, [root, "trainer.precision=banana"], "trainer.precision=banana is refused: Precision 'banana' is invalid", pre),
        "devices=0": (TRAIN, [root, "trainer.devices=0"], "trainer.devices=0 is refused", pre),
        "gradient_clip_val=-1": (TRAIN, [root, "trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1 must be >= 0 (or null)", pre),
        # keys, groups and components that do not exist
        "misspelt key": (TRAIN, [root, "model.latant_dim=5"], "model.latant_dim is not a setting (did you mean model.latent_dim?)", pre),
        "misspelt key, appended": (TRAIN, [root, "+model.latant_dim=5"], "model.latant_dim=5 is not a setting of VAE: drop it with ~model.latant_dim", pre),
        "misspelt top-level key": (TRAIN, [root, "sed=3"], "sed is not a setting (did you mean seed?)", pre),
        "null for a group": (TRAIN, [root, "callbacks=null"], "callbacks=null cannot drop a config group: use ~callbacks (to run without it)", pre),
        "delete a missing key": (TRAIN, [root, "~model.nothere"], "model.nothere is not a setting", pre),
        "append an existing key": (TRAIN, [root, "+model.latent_dim=3"], "+model.latent_dim: model.latent_dim is already a setting: drop the +", pre),
        "unknown data option": (TRAIN, [root, "data=cifar"], "data=cifar is not a data option (did you mean cifar10?): choose one of arrays, cifar10", pre),
        "unknown network option": (TRAIN, [root, "model/net=xyz"], "model/net=xyz is not a model/net option: choose one of conv, gated, mlp", pre),
        "unknown optimizer option": (TRAIN, [root, "optimizer=sgd"], "optimizer=sgd is not a optimizer option", pre),
        "unknown dataset name": (TRAIN, [root, "data.name=cifar"], "data.name='cifar' is not one of fashion_mnist, kmnist, mnist", pre),
        "sweep: misspelt swept key": (TRAIN, ["-m", root, "model.latant_dim=2,3"], "model.latant_dim is not a setting (did you mean model.latent_dim?)", pre),
        "sweep: second value not an option": (TRAIN, ["-m", root, "model/net=mlp,cnv"], "model/net=cnv is not a model/net option (did you mean conv?)", pre),
        "sweep: misspelt fixed key": (TRAIN, ["-m", root, "model.latent_dim=2,3", "optimizer.lrr=1"], "optimizer.lrr is not a setting (did you mean optimizer.lr?)", pre),
        "no = in an override": (TRAIN, [root, "latent_dim"], "cannot read the command line (Error parsing override 'latent_dim'", pre),
        "unclosed list": (TRAIN, [root, "model.net.hidden_dims=[1,2"], "cannot read the command line", pre),
        "network target missing": (TRAIN, [root, "model.net._target_=nowhere.Net"], "model.net._target_='nowhere.Net' cannot be loaded", pre),
        "network target not a network": (TRAIN, [root, "model.net._target_=torch.nn.Linear"], "model.net._target_='torch.nn.Linear' is not a network", pre),
        "network without the MLP's settings": (TRAIN, [root, "model.net._target_=vae_lightning.models.networks.ConvNet"],
                                               "model.net.hidden_dims=[512, 256] is not a setting of ConvNet: drop it with ~model.net.hidden_dims", pre),
        "conv layers too deep": (TRAIN, [root, "model/net=conv", "model.net.channels=[8,16,32]"], "model.net.channels=[8, 16, 32] halves the 28x28 images 3 times", pre),
        "zero epochs": (TRAIN, [root, "trainer.max_epochs=0"], "trainer.max_epochs=0 trains nothing: give a number of epochs >= 1", pre),
        "zero training batches": (TRAIN, [root, "trainer.limit_train_batches=0"], "trainer.limit_train_batches=0 trains nothing", pre),
        "sample grid of no columns": (TRAIN, [root, "callbacks.sample_grid.nrow=0"], "callbacks.sample_grid.nrow=0 must be >= 1", run),
        "no reconstructions": (TRAIN, [root, "callbacks.reconstructions.num_images=-1"], "callbacks.reconstructions.num_images=-1 must be >= 1", run),
        "64-bit precision": (TRAIN, [root, "trainer.precision=64-true"], "trainer.precision=64-true is not supported: the likelihoods and bounds compute in fp32", pre),
        "accumulate no batches": (TRAIN, [root, "+trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches=0 must be >= 1", pre),
        "validate every 0 batches": (TRAIN, [root, "+trainer.val_check_interval=0"], "trainer.val_check_interval=0 must be > 0", pre),
        "two nodes on one machine": (TRAIN, [root, "+trainer.num_nodes=2"], "trainer.num_nodes=2 needs one process per node started by a launcher", pre),
        "unknown model option": (TRAIN, [root, "model=vamp"], "model=vamp is not a model option: choose one of hiwae, hvae, iwae, two_level, vae", pre),
        "unknown prior option": (TRAIN, [root, "model/prior=gauss"], "model/prior=gauss is not a model/prior option: choose one of mog, normal, vamp", pre),
        "prior without components": (TRAIN, [root, "model/prior=mog", "model.prior.components=0"], "model.prior.components=0 must be >= 1", pre),
        "prior setting of another prior": (TRAIN, [root, "model/prior=mog", "+model.prior.init_std=0.1"],
                                           "model.prior.init_std=0.1 is not a setting of MoGPrior: drop it with ~model.prior.init_std", pre),
        "prior target not a prior": (TRAIN, [root, "model.prior._target_=torch.nn.Linear"], "model.prior._target_='torch.nn.Linear' is not a prior", pre),
        "flow with negative steps": (TRAIN, [root, "model/posterior=iaf", "model.posterior.steps=-1"], "model.posterior.steps=-1 must be >= 0", pre),
        "free bits without a KL per dim": (TRAIN, [root, "model/prior=vamp", "model.free_bits=0.5"], "model.free_bits=0.5 needs the KL of each latent dim", pre),
        "iwae with k=0": (TRAIN, [root, "model=iwae", "model.k=0"], "model.k=0 must be >= 1", pre),
        "free bits under iwae": (TRAIN, [root, "model=iwae", "+model.free_bits=0.5"], "model.free_bits=0.5 is not part of the IWAE bound: use model=vae", pre),
        "hvae with mismatched layers": (TRAIN, [root, "model=hvae", "model.hidden_dims=[[100]]"], "model.hidden_dims=[[100]] must give one list of widths per stochastic layer", pre),
        "hidden_dims=[]": (TRAIN, [root, "model.net.hidden_dims=[]"], "model.net.hidden_dims=[] must be a non-empty list of positive integers", pre),
        "activation=swish": (TRAIN, [root, "model.net.activation=swish"], "model.net.activation='swish' is not one of relu, tanh", pre),
        "arrays without a path": (TRAIN, ["data=arrays"], "data.path is required (its config says ???): set data.path=...", pre),
        "arrays path missing": (TRAIN, ["data=arrays", f"data.path={missing}.npz"], f"data.path={missing}.npz does not exist", pre),
        "arrays without x_train": (TRAIN, ["data=arrays", f"data.path={no_x}"], f"{no_x} has no array x_train (it holds: images)", pre),
        "arrays of 0/1 uint8 masks": (TRAIN, ["data=arrays", f"data.path={tmp / 'masks.npz'}", "data.val_size=5", "data.test_size=5"],
                                      f"{tmp / 'masks.npz'}: x_train is uint8 with values 0 and 1 only, which read as black images", run),
        "arrays floats out of range": (TRAIN, ["data=arrays", f"data.path={npz}", "data.val_size=5", "data.test_size=5"],
                                       f"{npz}: x_train holds floats in [2, 2]: scale them to [0, 1]", run),
        "image folder missing": (TRAIN, ["data=image_folder", f"data.root={missing}"], f"data.root={missing} does not exist", pre),
        "image folder channels=2": (TRAIN, ["data=image_folder", f"data.root={tmp}", "data.channels=2"], "data.channels=2 must be 1 (grey) or 3 (RGB)", pre),
        # data files
        "root missing, no download": (TRAIN, [f"data.root={missing}", "data.download=false"],
                                      f"MNIST not found in {missing}/MNIST/raw and data.download=false: set data.root=", run),
        "root is a file": (TRAIN, [f"data.root={a_file}"], f"data.root={a_file} is a file, not a folder", run),
        "truncated IDX": (TRAIN, [f"data.root={tmp / 'trunc'}"],
                          f"{tmp}/trunc/MNIST/raw/train-images-idx3-ubyte is damaged (truncated: 5000 bytes, its header "
                          "says 235216): delete it (data.download=true fetches it again) or replace it with a good copy", run),
        "wrong magic": (TRAIN, [f"data.root={tmp / 'magic'}"],
                        f"{tmp}/magic/MNIST/raw/train-images-idx3-ubyte is damaged (magic number 0x00000d03, expected 0x00000803)", run),
        "cifar missing, no download": (TRAIN, ["data=cifar10", f"data.root={missing}", "data.download=false"],
                                       f"CIFAR10 not found in {missing}/cifar-10-batches-py and data.download=false", run),
        # run folders and checkpoints
        "output under a file": (TRAIN, [root, f"hydra.run.dir={a_file}/run"],
                                f"cannot write the output folder hydra.run.dir={a_file}/run (Not a directory): "
                                "set hydra.run.dir=... or paths.log_dir=... to a writable folder", run),
        "log_dir under a file": (TRAIN, [root, f"paths.log_dir={a_file}/outputs"], "cannot write the output folder hydra.run.dir=", run),
        "earlier run's folder": (TRAIN, [root, f"hydra.run.dir={earlier}"],
                                 f"hydra.run.dir={earlier} already holds a run ({earlier}/checkpoints, {earlier}/metrics.json): "
                                 "choose a new hydra.run.dir=..., or add resume=true to continue that run", run),
        "resume with nothing to resume": (TRAIN, [root, "resume=true"], "/checkpoints/last.ckpt does not exist: add hydra.run.dir=", run),
        "ckpt_path missing": (TRAIN, [root, f"ckpt_path={missing}.ckpt"], f"ckpt_path={missing}.ckpt is not a file", run),
        "ckpt_path not a checkpoint": (TRAIN, [root, f"ckpt_path={a_file}"], f"ckpt_path={a_file} is not a readable checkpoint", run),
        "ckpt_path of another model": (TRAIN, [root, ck, "model.latent_dim=5"],
                                       f"ckpt_path={ckpt} holds a model with model.net=", run),
        "ckpt_path that trains nothing": (TRAIN, [root, ck, "experiment=latent2", "model.net.hidden_dims=[128,64]", "trainer.max_epochs=3"],
                                          f"ckpt_path={ckpt} ends epoch 3 but trainer.max_epochs=3: nothing would be trained", run),
        "ckpt_path of another model class": (TRAIN, [root, ck, "model=iwae"], f"ckpt_path={ckpt} holds a VAE but this run's model is IWAE", run),
        "diverging lr": (TRAIN, [root, *TINY, "optimizer.lr=1e6"],
                         "training diverged at epoch 0, step 2: train/loss is nan; lower optimizer.lr (now 1e+06)", run),
        # eval
        "eval: checkpoint missing": (EVAL, [f"ckpt_path={missing}.ckpt"], f"ckpt_path={missing}.ckpt does not exist", run),
        "eval: not a checkpoint": (EVAL, [f"ckpt_path={a_file}"], f"ckpt_path={a_file} is not a readable checkpoint", run),
        "eval: no ckpt_path": (EVAL, [], "ckpt_path is required (its config says ???): set ckpt_path=...", run),
        "eval: iw_samples=0": (EVAL, [ck, "eval.iw_samples=0"], "eval.iw_samples=0 must be >= 1, e.g. eval.iw_samples=1000", run),
        "eval: batch_size=abc": (EVAL, [ck, "eval.batch_size=abc"], "eval.batch_size='abc' must be an integer >= 1", run),
        "eval: split=train": (EVAL, [ck, "eval.split=train"], "eval.split='train' is not one of test, val", run),
        "eval: precision=16": (EVAL, [ck, "eval.precision=16"], "eval.precision=16 is not one of auto, 32-true, bf16-mixed", run),
        "eval: compile=maybe": (EVAL, [ck, "eval.compile=maybe"], "eval.compile='maybe' is not one of auto, true, false", run),
        "eval: out under a file": (EVAL, [ck, f"eval.out={a_file}/eval.json"], f"eval.out={a_file}/eval.json cannot be written ({a_file} is a file, not a folder)", run),
        "eval: a model setting": (EVAL, [ck, "model.latent_dim=5"], "model.latent_dim is not a setting here: the checkpoint fixes the model", pre),
        "eval: a model setting, appended": (EVAL, [ck, "+model.latent_dim=5"], "model.latent_dim=5 conflicts with ckpt_path=", run),
        "eval: range-changing data": (EVAL, [ck, "data.mean=0.5", "data.std=0.5"], "data.mean=0.5 data.std=0.5 put pixels in [-1, 1]", run),
        "sample: negative padding": (SAMPLE, [ck, "padding=-1"], "padding=-1 must be >= 0, e.g. padding=2", run),
        "eval: device=cuda": (EVAL, [ck, "device=cuda"], "device=cuda but no GPU is visible: use device=cpu (or auto)", run),
        "eval: device=cuda:0": (EVAL, [ck, "device=cuda:0"], "device=cuda:0 but no GPU is visible: use device=cpu (or auto)", run),
        "eval: device=banana": (EVAL, [ck, "device=banana"], "device=banana is not a device: use device=auto, cpu, cuda or cuda:N", run),
        "eval: misspelt key": (EVAL, [ck, "eval.iw_sample=5"], "eval.iw_sample is not a setting (did you mean eval.iw_samples?)", pre),
        # sample
        "sample: mode=walk": (SAMPLE, [ck, "mode=walk"], "mode='walk' is not one of prior, interpolate, manifold, traverse", run),
        "sample: n=0": (SAMPLE, [ck, "n=0"], "n=0 must be >= 1, e.g. n=256", run),
        "sample: nrow=0": (SAMPLE, [ck, "nrow=0"], "nrow=0 must be >= 1 (or null for sqrt(n))", run),
        "sample: span=nan": (SAMPLE, [ck, "mode=traverse", "span=nan"], "span=nan must be a finite number > 0", run),
        "sample: out under a file": (SAMPLE, [ck, f"out={a_file}/grid.png"], f"out={a_file}/grid.png cannot be written ({a_file} is a file, not a folder)", run),
        "sample: misspelt mode key": (SAMPLE, [ck, "mod=prior"], "mod is not a setting (did you mean mode?)", pre),
        "a truncated .npz": (TRAIN, ["data=arrays", f"data.path={tmp / 'cut.npz'}", "data.val_size=5"],
                             f"{tmp / 'cut.npz'} cannot be read (BadZipFile: File is not a zip file)", pre),
        "a .npz damaged inside": (TRAIN, ["data=arrays", f"data.path={tmp / 'flipped.npz'}", "data.val_size=5"],
                                  f"{tmp / 'flipped.npz'} cannot be read (BadZipFile: Bad CRC-32", pre),
        # kinds of issue 18: settings torch takes but that cannot train, monitors, entries without a class
        "optimizer.eps=0": (TRAIN, [root, "optimizer.eps=0"], "optimizer.eps=0 divides by zero wherever a gradient is 0", pre),
        "kl_weight overflows float32": (TRAIN, [root, "model.kl_weight=1e308"], "model.kl_weight=1e+308 must be <= 1e+10", pre),
        "early stopping on a misspelt metric": (TRAIN, [root, "callbacks/early_stopping=on", "callbacks.early_stopping.monitor=val/lss"],
                                                "callbacks.early_stopping.monitor='val/lss' is not a metric the model logs (did you mean val/loss?)", pre),
        "early stopping: a negative warm-up": (TRAIN, [root, "callbacks/early_stopping=on", "callbacks.early_stopping.kl_warmup_epochs=-1"],
                                               "callbacks.early_stopping.kl_warmup_epochs=-1 must be >= 0", pre),
        "checkpoint on a misspelt metric": (TRAIN, [root, "callbacks.model_checkpoint.monitor=val/los"],
                                            "callbacks.model_checkpoint.monitor='val/los' is not a metric the model logs (did you mean val/loss?)", pre),
        "a callback without a class": (TRAIN, [root, "+callbacks.mine.every=3"], "callbacks.mine has no _target_", pre),
        "save_top_k=-2": (TRAIN, [root, "callbacks.model_checkpoint.save_top_k=-2"],
                          "callbacks.model_checkpoint.save_top_k=-2 is refused: Invalid value for save_top_k=-2", pre),
        "a logger setting its class lacks": (TRAIN, [root, "logger=csv", "+logger.csv.bogus=1"], "logger.csv.bogus=1 is not a setting of CSVLogger", pre),
        "a group set to null": (TRAIN, [root, "scheduler=null"], "scheduler=null cannot drop a config group: use ~scheduler", pre),
        "a key appended twice": (TRAIN, [root, "+seed=3"], "+seed: seed is already a setting: drop the + (seed=...)", pre),
        # kinds of the second probe: outputs over a run's records, settings torch reads at the first step,
        # a rate a scheduler takes below zero, float16 on a CPU, files where folders go, empty sweeps
        "eval: out over the run's metrics.json": (EVAL, [ck, f"eval.out={ckpt.parent.parent}/metrics.json"],
                                                  "would write over the run's metrics.json", run),
        "eval: out over a checkpoint": (EVAL, [ck, f"eval.out={ckpt}"], f"eval.out={ckpt} must name a .json file", run),
        "sample: out not an image": (SAMPLE, [ck, f"out={tmp}/grid.ckpt"], f"out={tmp}/grid.ckpt must name a .png / .jpg", run),
        "sample: n too big": (SAMPLE, [ck, "n=100000000"], "n=100000000 must be <= 65536", run),
        "fused and foreach": (TRAIN, [root, "optimizer.foreach=true"], "is refused: `fused` and `foreach` cannot be `True` together", pre),
        "amsgrad=maybe": (TRAIN, [root, "+optimizer.amsgrad=maybe"], "optimizer.amsgrad=maybe is refused", pre),
        "betas with one value": (TRAIN, [root, "+optimizer.betas=[0.9]"], "optimizer.betas=[0.9] is refused", pre),
        "a scheduler's rate below zero": (TRAIN, [root, *TINY, "scheduler=cosine", "+scheduler.eta_min=-1"],
                                          "the learning rate became -0.4995 at epoch 1, step 16: a learning rate must not be negative", run),
        "float16 on a CPU": (TRAIN, [root, "trainer.precision=16-mixed"], "trainer.precision=16-mixed is not available here: Lightning would run bf16-mixed", pre),
        "png_dir is a file": (TRAIN, [root, f"callbacks.sample_grid.png_dir={a_file}"], f"callbacks.sample_grid.png_dir='{a_file}' must be a folder, but it is a file", pre),
        "a logger's folder is a file": (TRAIN, [root, "data.val_size=100", "logger=csv", f"logger.csv.save_dir={a_file}"], f"cannot use {a_file}/csv (Not a directory)", run),
        "a logger's server does not answer": (TRAIN, [root, "logger=mlflow", "logger.mlflow.tracking_uri=http://127.0.0.1:9"],
                                               "logger.mlflow.tracking_uri=http://127.0.0.1:9 does not answer", pre),
        "compile_mode=banana": (TRAIN, [root, "model.compile=true", "model.compile_mode=banana"],
                                "model.compile_mode='banana' is not one of default, reduce-overhead", pre),
        "a schedule's own setting": (TRAIN, [root, "scheduler=iwae_paper", "scheduler.stages=0"], "scheduler.stages=0 must be >= 1", pre),
        "a model setting deleted": (TRAIN, [root, "~model.latent_dim"],
                                    "~model.latent_dim would build VAE with its own default for model.latent_dim", pre),
        "a part the model lacks": (TRAIN, [root, "model=hvae", "model/posterior=iaf"],
                                   "model/posterior=iaf: model=hvae has no posterior to choose: drop model/posterior=iaf", pre),
        "NaN pixels": (TRAIN, ["data=arrays", f"data.path={tmp / 'nan.npz'}", "data.val_size=5"],
                       f"{tmp / 'nan.npz'}: x_train holds 1 NaN or infinite pixels", run),
        "ckpt_path of other images": (TRAIN, ["data=arrays", f"data.path={tmp / 'colour.npz'}", "data.val_size=5", "model/likelihood=gaussian",
                                              ck, "experiment=latent2", "model.net.hidden_dims=[128,64]", "trainer.max_epochs=5"],
                                      "holds a model of [1, 28, 28] images, but this run's data are [3, 32, 32]", pre),
        "validation never runs": (TRAIN, [root, "trainer.check_val_every_n_epoch=5", "trainer.max_epochs=2"],
                                  "trainer.check_val_every_n_epoch=5 is more than trainer.max_epochs=2: validation would never run", pre),
        "a sweep of no value": (TRAIN, ["-m", root, "model.latent_dim=range(5,2)"], "model.latent_dim=range(5,2) sweeps no value", pre),
        # summarize
        "summarize: no folder": (SUMMARIZE, [], "give one sweep folder: python -m vae_lightning.summarize SWEEP_DIR", run),
        "summarize: no job folders": (SUMMARIZE, [str(tmp)], f"error: {tmp} holds no job folders", run),
    }
    t["root missing, offline"] = (TRAIN, [f"data.root={missing}"], f"MNIST not found in {missing}/MNIST/raw and no "
                                  "download server answers (ossci-datasets.s3.amazonaws.com, yann.lecun.com)", run)
    return t


CASE_NAMES = list(table(Path("root"), Path("tmp"), Path("last.ckpt")))
OFFLINE = not any(reachable(m, timeout=1) for m in DATASETS["mnist"].mirrors)


@pytest.fixture(scope="module")
def outcomes(tiny_mnist, latent2_run, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    ckpt = latent2_run / "checkpoints" / "last.ckpt"
    before = ckpt.read_bytes()
    make_files(tmp)
    cases = table(tiny_mnist, tmp, ckpt)
    if not OFFLINE:  # a download server answers: that case would download
        del cases["root missing, offline"]
    runs = {name: tmp / "runs" / str(i) for i, name in enumerate(cases)}
    args = [(m, [*a, f"hydra.{'sweep' if '-m' in a else 'run'}.dir={runs[n]}"]
             if m == TRAIN and not any(x.startswith(("hydra.run.dir=", "paths.log_dir=")) for x in a)
             else a, {}) for n, (m, a, _, _) in cases.items()]
    args += [(TRAIN, [f"data.root={tiny_mnist}", "model.latent_dim=0", f"hydra.run.dir={tmp / 'full'}"], {"HYDRA_FULL_ERROR": "1"})]
    started = time.perf_counter()
    results = run_cases(args)
    seconds = time.perf_counter() - started
    named = {n: (c, r) for (n, c), r in zip(cases.items(), results)}
    return {"named": named, "full": results[-1], "tmp": tmp, "runs": runs, "seconds": seconds,
            "ckpt_intact": ckpt.read_bytes() == before}


def test_the_table_is_large():
    assert len(set(CASE_NAMES)) >= 90


@pytest.mark.parametrize("name", CASE_NAMES)
def test_one_line_exit_2_no_traceback(outcomes, name):
    if name not in outcomes["named"]:
        pytest.skip("a download server is reachable from here")
    (module, _, expected, stage), result = outcomes["named"][name]
    stderr = result["stderr"]
    lines = stderr.strip().splitlines()
    assert result["code"] == 2, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert lines and lines[-1].startswith("error: ") and expected in lines[-1], lines[-1:]  # names the setting and fix
    if stage == "preflight":
        assert len(lines) == 1, stderr[-3000:]  # nothing but the line
        if module == TRAIN:
            assert not outcomes["runs"][name].exists(), name  # refused before the run folder was made


def test_nothing_was_trained_or_overwritten(outcomes):
    for name, ((module, _, _, _), _) in outcomes["named"].items():
        run = outcomes["runs"][name]
        if module == TRAIN and name not in ("diverging lr", "a scheduler's rate below zero"):
            assert not any((run / d).exists() for d in ("checkpoints", "tensorboard", "metrics.json")), name
    earlier = outcomes["tmp"] / "earlier_run"
    assert (earlier / "checkpoints" / "last.ckpt").read_bytes() == b"precious weights"
    assert (earlier / "metrics.json").read_text() == '{"metrics": {"val/loss": 101.5}}\n'
    assert not (earlier / ".hydra").exists() and sorted(p.name for p in earlier.iterdir()) == ["checkpoints", "metrics.json"]
    assert outcomes["ckpt_intact"]
    assert outcomes["seconds"] < 300, "each bad input is refused in seconds"


def test_HYDRA_FULL_ERROR_shows_the_traceback(outcomes):
    result = outcomes["full"]
    assert result["code"] != 0 and "Traceback" in result["stderr"]
    assert "Error: model.latent_dim=0 must be >= 1" in result["stderr"]  # SettingError, a UserError


def test_a_failed_run_keeps_its_traceback_in_train_log(tiny_mnist, tmp_path):
    from tests.conftest import run_train

    run = tmp_path / "run"
    proc = run_train(f"data.root={tiny_mnist}", f"hydra.run.dir={run}", "data.val_size=600")  # fails after the folder exists
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: data.val_size=600")
    log = (run / "train.log").read_text()
    assert "Traceback" in log and "SettingError: data.val_size=600 must lie between 1 and 599" in log
    info = json.loads((run / "run_info.json").read_text())
    assert info["status"] == "failed" and info["error"].startswith("data.val_size=600")


def test_runs_started_together_never_share_a_folder(tiny_mnist, tmp_path):
    quick = [f"data.root={tiny_mnist}", *TINY, "trainer.max_epochs=1", "trainer.limit_train_batches=2",
             "trainer.limit_val_batches=1", "test=false", "callbacks.latent_embedding.num_points=50",
             f"paths.log_dir={tmp_path}"]
    cmd = [sys.executable, "-m", "vae_lightning.train"]
    env = command_env()
    procs = [subprocess.Popen([*cmd, *quick], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    procs.append(subprocess.Popen([*cmd, "-m", *quick, "seed=1,2"], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    singles = sorted((tmp_path / "runs").iterdir())
    jobs = sorted(p for sweep in (tmp_path / "multiruns").iterdir() for p in sweep.iterdir() if p.is_dir())
    assert len(singles) == 2 and [j.name for j in jobs] == ["0", "1"]
    for run in singles + jobs:
        assert json.loads((run / "metrics.json").read_text())["global_step"] == 2, run
        assert (run / "checkpoints" / "last.ckpt").is_file() and len(list((run / "tensorboard").rglob("events.*"))) == 1
        assert not (run / ".lock").exists()  # released when the run ended
    seeds = {json.loads((j / "metrics.json").read_text())["hparams"]["seed"] for j in jobs}
    assert seeds == {1, 2}
    assert torch.load(singles[0] / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
