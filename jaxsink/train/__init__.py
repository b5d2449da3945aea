"""Training: optimizer, jitted steps, the loop, checkpoints, metrics."""
