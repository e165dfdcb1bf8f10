"""LightningModules: the training logic around a network built elsewhere."""
