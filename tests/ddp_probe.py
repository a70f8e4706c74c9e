"""A callback for tests/test_ddp.py: each rank writes the sample indices
its training batches held."""

import json
from pathlib import Path

import lightning as L
import torch


class Probe(L.Callback):
    def __init__(self, out: str):
        self.out = Path(out)
        self.record: dict = {"train_indices": []}

    def on_train_epoch_start(self, trainer, pl_module):
        # torch's BatchSampler over a DistributedSampler
        batches = trainer.train_dataloader.batch_sampler
        self.record["world_size"], self.record["batch_size"] = (
            batches.sampler.num_replicas,
            batches.batch_size,
        )
        self.record["threads"] = torch.get_num_threads()
        self.record["train_indices"].append([int(i) for batch in batches for i in batch])

    def on_fit_end(self, trainer, pl_module):
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.record))
