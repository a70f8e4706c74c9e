"""Components that write a line to ``$COUNT_FILE`` each time one is built: how many times a training
start constructs its network, its data module and its callbacks (tests/test_train.py)."""

import os

from lightning.pytorch.callbacks import Callback

from vae_lightning.data.mnist import MNISTDataModule
from vae_lightning.models.networks.mlp import MLPNet


def count(name: str) -> None:
    with open(os.environ["COUNT_FILE"], "a") as f:
        f.write(f"{name} {os.getpid()}\n")


class CountingNet(MLPNet):
    def __init__(self, *args, **kwargs) -> None:
        count("net")
        super().__init__(*args, **kwargs)


class CountingMNIST(MNISTDataModule):
    def __init__(self, *args, **kwargs) -> None:
        count("data")
        super().__init__(*args, **kwargs)


class CountingCallback(Callback):
    def __init__(self) -> None:
        count("callback")
