"""Lightning's EarlyStopping that lets a KL warm-up run: while beta still rises, the true negative
ELBO (val/loss) may get worse without the model getting worse at what it optimizes, so epochs of
the warm-up never count towards ``patience``. The best value is still tracked through them, as in
Tomczak & Welling's code (vae_vampprior, utils/perform_experiment.py: the counter stays at 0 before
the warm-up's last epoch)."""

import math

from lightning.pytorch.callbacks import EarlyStopping as LightningEarlyStopping

from vae_lightning.errors import check_int


class EarlyStopping(LightningEarlyStopping):
    """``kl_warmup_epochs`` (the model's, by default): an epoch ending with beta below its full
    value leaves the count of epochs without improvement at 0."""

    def __init__(self, *args, kl_warmup_epochs: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.kl_warmup_epochs = check_int("kl_warmup_epochs", kl_warmup_epochs, low=0, example=0)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._counting(trainer, pl_module, super().on_train_epoch_end)

    def on_validation_end(self, trainer, pl_module) -> None:
        self._counting(trainer, pl_module, super().on_validation_end)

    def _counting(self, trainer, pl_module, check) -> None:
        if trainer.current_epoch + 1 >= self.kl_warmup_epochs:  # beta is full at this epoch's end
            check(trainer, pl_module)
            return
        patience, self.patience = self.patience, math.inf  # the best is tracked, nothing stops
        try:
            check(trainer, pl_module)
        finally:
            self.patience, self.wait_count = patience, 0
