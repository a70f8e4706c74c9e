"""Learning-rate schedules from papers, as torch schedulers (conf/scheduler/)."""

import torch

from vae_lightning.errors import check_int

IWAE_PAPER_EPOCHS = 3280  # sum of 3^i for i = 0..7


def iwae_paper(
    optimizer: torch.optim.Optimizer,
    epochs: int = IWAE_PAPER_EPOCHS,
    stages: int = 8,
    steps_per_epoch: float = 1,
):
    """Burda et al. (2016): stage i = 0..stages-1 lasts 3^i epochs at lr0 * 10^(-i/7)
    (lr0 = the optimizer's lr).

    The paper's 3280 epochs (8 stages) are scaled to ``epochs`` (default: trainer.max_epochs), so a
    shorter run keeps the schedule's shape; ``epochs=3280 trainer.max_epochs=121`` instead runs the
    paper's first 5 stages as they are. The milestones are in optimizer steps (``steps_per_epoch``,
    given by the LightningModule), so stages shorter than an epoch keep their length.
    """
    check_int("epochs", epochs, low=1, example=IWAE_PAPER_EPOCHS)
    check_int("stages", stages, low=1, example=8)
    ends, total = [], 0
    for i in range(stages):
        total += 3**i
        ends.append(total)
    scale = epochs * steps_per_epoch / total
    # a repeated milestone decays the lr twice
    milestones = [max(1, round(end * scale)) for end in ends[:-1]]
    return torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=milestones, gamma=10 ** (-1 / 7)
    )
