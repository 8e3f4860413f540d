"""The one exception type for mistakes a user can make, and the registry look-up that uses it."""
from typing import Mapping, TypeVar

T = TypeVar("T")


class GGLError(Exception):
    """A mistake the user can fix (bad name, missing file, wrong shape, budget too small).

    The message says what was wrong and what would be accepted; the CLI prints it without
    a traceback and exits with code 2.
    """


def choose(registry: Mapping[str, T], name: str, what: str) -> T:
    """Return ``registry[name]``, or raise a GGLError that lists the valid names.

    Args:
        registry: a plain dict from user-facing name to class or factory.
        name: the name the user gave.
        what: what kind of thing is looked up, e.g. ``"attack"`` (used in the message).
    """
    try:
        return registry[name]
    except KeyError:
        valid = ", ".join(sorted(registry))
        raise GGLError(f"unknown {what} {name!r}; valid {what}s: {valid}") from None
