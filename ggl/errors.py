"""The one exception type for mistakes a user can make (registries raise it too,
``ggl.registry``)."""


class GGLError(Exception):
    """A mistake the user can fix (bad name, missing file, wrong shape, budget too small).

    The message says what was wrong and what would be accepted; the CLI prints it without
    a traceback and exits with code 2.
    """
