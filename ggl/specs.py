"""The ``NAME[:ARG][,KEY=VALUE...]`` text a user writes for a defense or a generator.

``--defense pruning:50,noise=0.1`` is the name ``pruning``, the argument ``50`` and the
option ``noise=0.1``; ``--generator wgan-gp:results/prior`` is the name ``wgan-gp`` and the
argument ``results/prior`` (a generator takes no options, so its argument may hold commas).
What the argument and the options mean is the registry entry's business; this module only
splits the text.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ggl.errors import GGLError


@dataclass(frozen=True)
class Spec:
    """A parsed spec: ``name``, the text after ``:`` (``None`` without one) and the
    ``KEY=VALUE`` options in the order given, values as written (stripped)."""

    name: str
    arg: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    text: str = ""


def parse_spec(text: str, flag: str, *, options: bool = True) -> Spec:
    """Split ``NAME[:ARG][,KEY=VALUE...]``; ``options=False`` keeps everything after the
    first ``:`` as the argument.

    Args:
        text: what the user wrote.
        flag: how the spec is named in messages, e.g. ``"--defense"``.

    Raises:
        GGLError: an empty name, or an option that is not ``KEY=VALUE``.
    """
    if not isinstance(text, str):
        raise GGLError(f"{flag} takes text like NAME[:ARG], got {text!r}")
    head, *pairs = text.strip().split(",") if options else (text.strip(),)
    name, colon, arg = head.partition(":")
    if not name.strip():
        raise GGLError(f"{flag} {text!r} has no name (written NAME[:ARG]"
                       f"{'[,KEY=VALUE...]' if options else ''})")
    parsed: dict[str, str] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key.strip():
            raise GGLError(f"{flag} {text!r}: {pair!r} is not KEY=VALUE")
        if key.strip() in parsed:
            raise GGLError(f"{flag} {text!r} gives {key.strip()}= twice")
        parsed[key.strip()] = value.strip()
    return Spec(name.strip(), arg.strip() if colon else None, parsed, text)
