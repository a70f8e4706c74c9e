"""The model: networks (encoder/decoder components), likelihoods, the LightningModule, and the bounds it is judged by."""
