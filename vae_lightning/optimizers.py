"""Optimizers torch does not ship, each chosen with ``optimizer=<name>``
(conf/optimizer/<name>.yaml).

AdamNormGrad (Tomczak & Welling's code for the VampPrior paper, vae_vampprior utils/optimizer.py):
Adam on each parameter's gradient divided by its own L2 norm, g / (||g|| + 1e-7), so every tensor
of weights steps from a gradient of unit length whatever the scale of the loss.
"""

import torch

from vae_lightning.errors import check_float


class AdamNormGrad(torch.optim.Adam):
    def __init__(self, params, *args, norm_eps: float = 1e-7, **kwargs) -> None:
        self.norm_eps = check_float("norm_eps", norm_eps, low=0, low_ok=False, example=1e-7)
        super().__init__(params, *args, **kwargs)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:  # Lightning's closure runs the forward and backward passes
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.div_(torch.linalg.vector_norm(p.grad) + self.norm_eps)
        super().step()
        return loss
