"""``python -m ggl``: the ``ggl`` command."""
from ggl.cli import main

main()
