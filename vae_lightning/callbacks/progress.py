"""The progress bar: Lightning's RichProgressBar, doing its per-step work only on the steps it
redraws."""

from lightning.pytorch.callbacks import RichProgressBar as LightningRichProgressBar


class RichProgressBar(LightningRichProgressBar):
    """Lightning's RichProgressBar; after a training step it updates its task and reads the
    metrics only every ``refresh_rate`` steps and at the epoch's last, where it redraws. Lightning's
    does both after every step although it redraws every ``refresh_rate``: 54 us per step here,
    1% of a CPU step of the default model."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        done = batch_idx + 1
        if (
            self.refresh_rate <= 1
            or done % self.refresh_rate == 0
            or done >= self.total_train_batches
        ):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
