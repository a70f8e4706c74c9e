"""DDP: per-rank sharding of batches, the global batch size,
and one real 2-process CPU run under Hydra."""

import json
import math
import os
from types import SimpleNamespace

import pytest

from tests.conftest import REPO, TINY, run_train
from tests.test_data import index_loader
from vae_lightning.callbacks.threads import usable_cores
from vae_lightning.data.mnist import MNISTDataModule
from vae_lightning.errors import UserError


@pytest.mark.parametrize("n, batch, world", [(500, 16, 2), (501, 16, 2), (100, 7, 3)])
def test_ranks_see_disjoint_shards_of_equal_length(n, batch, world):
    for epoch in (0, 1):
        shards = []
        for rank in range(world):
            loader = index_loader(n, batch, shuffle=True, seed=3, rank=rank, world_size=world)
            loader.batch_sampler.sampler.set_epoch(epoch)
            batches = list(loader)
            # the documented steps per epoch
            assert len(batches) == len(loader) == math.ceil((n // world) / batch)
            shards.append([int(i) for _, y in batches for i in y])
        seen = [i for shard in shards for i in shard]
        # no sample twice; at most world-1 dropped
        assert len(seen) == len(set(seen)) == (n // world) * world


def test_batch_size_is_global_and_must_divide(tiny_mnist):
    dm = MNISTDataModule(root=str(tiny_mnist), batch_size=32, val_size=100)
    dm.trainer = SimpleNamespace(global_rank=1, world_size=2)
    assert dm.train_dataloader().batch_sampler.batch_size == 16
    dm.batch_size = 33
    with pytest.raises(UserError, match="data.batch_size=33 .* must divide by the 2 devices"):
        dm.train_dataloader()
    # validation and test have their own global batch, split the same way
    assert dm.val_dataloader().batch_sampler.batch_size == 500
    dm.eval_batch_size = 999
    with pytest.raises(UserError, match="data.eval_batch_size=999 .* must divide by the 2 devices"):
        dm.test_dataloader()


def test_two_cpu_processes_train_into_one_run_folder(tiny_mnist, tmp_path):
    probe = tmp_path / "probe"
    proc = run_train(
        f"data.root={tiny_mnist}",
        f"paths.log_dir={tmp_path / 'logs'}",
        *TINY,
        "trainer.max_epochs=1",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "callbacks.latent_embedding.num_points=50",
        "trainer.num_sanity_val_steps=0",
        "test=false",
        "+callbacks.probe._target_=tests.ddp_probe.Probe",
        f"+callbacks.probe.out={probe}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((tmp_path / "logs" / "runs").iterdir())
    # ONE run folder for both ranks
    assert len(runs) == 1 and not (tmp_path / "logs" / "multiruns").exists()
    run = runs[0]
    result = json.loads((run / "metrics.json").read_text())
    # 500 training images: 250 per rank, 16 per rank per step (global batch 32)
    # -> ceil(250 / 16) = 16 steps
    assert result["epochs"] == 1 and result["global_step"] == 16
    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["world_size"], r["batch_size"]) for r in ranks] == [(2, 16), (2, 16)]
    # the node's cores shared by its ranks
    assert [r["threads"] for r in ranks] == [max(1, usable_cores() // 2)] * 2
    seen = ranks[0]["train_indices"][0] + ranks[1]["train_indices"][0]
    assert len(seen) == len(set(seen)) == 500
    assert result["metrics"]["best/val_loss"] == pytest.approx(
        result["metrics"]["val/loss"], rel=1e-5
    )
    # rank zero alone checkpoints and logs, into that folder
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "best-epoch000.ckpt",
        "last.ckpt",
    ]
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((run / "run_info.json").read_text())["status"] == "completed"


def test_srun_tasks_train_as_the_ranks_of_one_run_under_trainer_slurm(tiny_mnist, tmp_path):
    """trainer=slurm, as srun starts it: one process per device, each told its rank by SLURM's
    variables (simulated here on the CPU); Lightning's SLURMEnvironment joins them, they share one
    run folder."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    common = {
        "SLURM_NTASKS": "2",
        "SLURM_NTASKS_PER_NODE": "2",
        "SLURM_NNODES": "1",
        "SLURM_NODEID": "0",
        "SLURM_NODELIST": "127.0.0.1",
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "vae",
        "SLURM_STEP_ID": "0",
        "MASTER_PORT": str(port),
        "PYTHONWARNINGS": "ignore",
    }
    args = [
        f"data.root={tiny_mnist}",
        f"paths.log_dir={tmp_path / 'logs'}",
        *TINY,
        "trainer.max_epochs=1",
        "trainer=slurm",
        "trainer.accelerator=cpu",
        "callbacks.latent_embedding.num_points=50",
        "trainer.num_sanity_val_steps=0",
        "test=false",
        "print_config=false",
        "+callbacks.probe._target_=tests.ddp_probe.Probe",
        f"+callbacks.probe.out={tmp_path / 'probe'}",
    ]
    tasks = [
        subprocess.Popen(
            [sys.executable, "-m", "vae_lightning.train", *args],
            cwd=REPO,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **common, "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r)},
        )
        for r in (0, 1)
    ]
    outs = [t.communicate(timeout=600) for t in tasks]
    assert [t.returncode for t in tasks] == [0, 0], [o[1][-2000:] for o in outs]
    runs = list((tmp_path / "logs" / "runs").iterdir())
    assert [r.name for r in runs] == ["slurm-4242"]  # every task of the step names the same folder
    result = json.loads((runs[0] / "metrics.json").read_text())
    assert result["global_step"] == 16  # 250 images per rank, 16 per rank per step
    ranks = [json.loads((tmp_path / "probe" / f"rank{r}.json").read_text()) for r in (0, 1)]
    # two ranks, not two runs
    assert [(r["world_size"], r["batch_size"]) for r in ranks] == [(2, 16), (2, 16)]
    seen = ranks[0]["train_indices"][0] + ranks[1]["train_indices"][0]
    assert len(seen) == len(set(seen)) == 500
    assert (
        result["hparams"]["trainer.devices"] == 2 and result["hparams"]["trainer.strategy"] == "ddp"
    )
    assert sorted(p.name for p in (runs[0] / "checkpoints").iterdir()) == [
        "best-epoch000.ckpt",
        "last.ckpt",
    ]
    assert json.loads((runs[0] / "run_info.json").read_text())["status"] == "completed"
    assert not (runs[0] / ".lock").exists()
