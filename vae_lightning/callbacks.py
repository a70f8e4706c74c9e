"""Lightning callbacks for what TensorBoard should show beyond scalars."""

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.tensorboard.summary import hparams as hparams_summary
from torchvision.utils import make_grid

from vae_lightning.data import DATASETS, normalize


def tensorboard(trainer: L.Trainer):
    """The SummaryWriter of the trainer's TensorBoardLogger, or None when there is none."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


class SampleGrid(L.Callback):
    """Every epoch, log images decoded from one FIXED batch of z ~ N(0, I), drawn once per run.

    The grid shows the same latents as training goes on (tutorial: 256 samples, 16 x 16).
    """

    def __init__(self, num_samples: int = 256, nrow: int = 16, seed: int = 0, tag: str = "samples"):
        self.num_samples, self.nrow, self.seed, self.tag = num_samples, nrow, seed, tag

    def latents(self, latent_dim: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed)
        return torch.randn(self.num_samples, latent_dim, generator=g)

    @rank_zero_only
    def on_train_epoch_end(self, trainer, pl_module):
        writer = tensorboard(trainer)
        if writer is None:
            return
        images = pl_module.to_unit_range(pl_module.sample(self.latents(pl_module.hparams.latent_dim)))
        writer.add_image(self.tag, make_grid(images.float().cpu(), nrow=self.nrow), trainer.current_epoch)


class Reconstructions(L.Callback):
    """Every epoch, log the first validation images (top row) above their reconstructions (bottom row)."""

    def __init__(self, num_images: int = 16, tag: str = "reconstructions"):
        self.num_images, self.tag = num_images, tag
        self.inputs: torch.Tensor | None = None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if self.inputs is None and batch_idx == 0:
            self.inputs = batch[0][: self.num_images].detach().cpu()

    @rank_zero_only
    def on_validation_epoch_end(self, trainer, pl_module):
        writer = tensorboard(trainer)
        if writer is None or self.inputs is None or trainer.sanity_checking:
            return
        recon = pl_module.reconstruct(self.inputs).cpu()
        images = pl_module.to_unit_range(torch.cat([self.inputs.to(recon.dtype), recon]))
        writer.add_image(self.tag, make_grid(images.float(), nrow=len(self.inputs)), trainer.current_epoch)


class KLHistogram(L.Callback):
    """Every epoch, a histogram of the KL of each latent dim (mean over the validation set).

    Collapsed dims pile up at 0 nats; the scalar ``val/kl_dims_above_0.01`` counts the others.
    """

    def __init__(self, tag: str = "kl_per_dim", threshold: float = 0.01):
        self.tag, self.threshold = tag, threshold
        self.total: torch.Tensor | None = None
        self.count = 0

    def on_validation_epoch_start(self, trainer, pl_module):
        self.total, self.count = None, 0

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        n = len(batch[0])
        kl = outputs["kl_dims"].float() * n  # the module's own per-dim KL of this batch (no second pass)
        self.total = kl if self.total is None else self.total + kl
        self.count += n

    @rank_zero_only
    def on_validation_epoch_end(self, trainer, pl_module):
        writer = tensorboard(trainer)
        if writer is None or self.total is None or trainer.sanity_checking:
            return
        kl = (self.total / self.count).cpu()
        writer.add_histogram(self.tag, kl, trainer.current_epoch)
        writer.add_scalar(f"val/kl_dims_above_{self.threshold:g}", int((kl > self.threshold).sum()), trainer.current_epoch)


class LatentEmbedding(L.Callback):
    """At the end of training, the posterior means mu(x) of test images in TensorBoard's projector,
    with their class names and image sprites (a random subset of ``num_points``, fixed by ``seed``)."""

    def __init__(self, num_points: int = 1000, seed: int = 0, tag: str = "test_mu"):
        self.num_points, self.seed, self.tag = num_points, seed, tag

    @rank_zero_only
    @torch.no_grad()
    def on_fit_end(self, trainer, pl_module):
        writer, datamodule = tensorboard(trainer), trainer.datamodule
        if writer is None or datamodule is None or not hasattr(datamodule, "split"):
            return
        images, labels = datamodule.split("test")
        idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.seed))[: self.num_points]
        x = normalize(images[idx], datamodule.mean, datamodule.std)
        mu = torch.cat([pl_module.net.encode(part.to(pl_module.device))[0].float().cpu() for part in x.split(500)])
        classes = getattr(DATASETS.get(datamodule.name), "classes", None)
        metadata = [classes[int(k)] if classes else str(int(k)) for k in labels[idx]]
        sprites = images[idx].unsqueeze(1).float() / 255.0
        writer.add_embedding(mu, metadata=metadata, label_img=sprites, global_step=trainer.global_step, tag=self.tag)
        writer.flush()


class HParams(L.Callback):
    """Write the run's hyperparameters to TensorBoard's HParams dashboard, with ``val/loss`` as its metric.

    The values come from the run's composed config (``pl_module.run_config``), flattened to
    dotted keys and limited to the sections in ``include``. Lightning's own ``log_hyperparams``
    can only attach a metric by logging a placeholder value for it; here the dashboard reads
    the real ``val/loss`` scalars the run logs.
    """

    def __init__(self, include=("model", "optimizer", "scheduler", "data", "seed"), metrics=("val/loss",)):
        self.include, self.metrics = tuple(include), tuple(metrics)

    def params(self, config: dict) -> dict:
        flat = flatten({k: config[k] for k in self.include if k in config})
        return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flat.items()}

    @rank_zero_only
    def on_fit_start(self, trainer, pl_module):
        writer = tensorboard(trainer)
        if writer is None or not pl_module.run_config:
            return
        for summary in hparams_summary(self.params(pl_module.run_config), {m: 0.0 for m in self.metrics}):
            writer._get_file_writer().add_summary(summary)


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"model": {"loss": "bce"}} -> {"model.loss": "bce"}; drops Hydra's ``_target_`` keys."""
    flat = {}
    for key, value in tree.items():
        if str(key).startswith("_"):
            continue
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
