"""WGAN-GP prior training behind ``ggl train-prior``: filled by the train-prior issue."""
