"""Training: the LightningModule, its metrics and callbacks, the train command and sweeps."""
