"""vae_lightning: a PyTorch Lightning + Hydra research template for variational autoencoders."""

__version__ = "0.1.0"
