"""Generators for Generative Gradient Leakage (WGAN-GP, BigGAN): filled by the GGL issue."""
