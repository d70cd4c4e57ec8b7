"""Training: the LightningModule (loss, logging, optimisers), run folders and the W&B logger."""
