"""Latent-space optimizers for GGL (nevergrad, TuRBO, Adam): filled by the GGL issue."""
