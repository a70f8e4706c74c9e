"""Lightning callbacks: what TensorBoard shows beyond scalars (images, latents, hparams) and the
guards of a long run.

They use only the LightningModule's interface (models/base.py) and the data interface
(data/base.py).
"""
