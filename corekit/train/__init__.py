"""Training with Lightning: the LightningModule and the training entry point."""
