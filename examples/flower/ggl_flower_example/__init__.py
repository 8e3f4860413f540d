"""A Flower app whose server audits its clients' updates with ggl (see README.md)."""
