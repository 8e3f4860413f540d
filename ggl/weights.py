"""Reading a weights file a user gives, without unpickling anything but tensors.

``.safetensors`` files are read by safetensors; any other file by
``torch.load(weights_only=True)``, which refuses pickled objects. A file that cannot be
read gives one ``GGLError`` line of ggl's own: torch's multi-line text (which advises
re-running with ``weights_only=False``) is never passed on.
"""
from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import torch

from ggl.errors import GGLError

ACCEPTED = "a safetensors file or a plain state dict of tensors saved with torch.save"


def read_state_dict(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """The tensors of the weights file ``path`` (on the CPU), or one clear error.

    Args:
        what: how the file is named in messages, e.g. ``"victim weights"``.
    """
    path = Path(path)
    if not path.is_file():
        raise GGLError(f"{what}: {path} does not exist (accepted: {ACCEPTED})")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            with warnings.catch_warnings():      # torch's notes on pickle protocols
                warnings.simplefilter("ignore")
                state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:         # junk, or pickled objects beyond tensors
        raise GGLError(f"{what}: cannot read {path}: corrupt, truncated, or pickled objects "
                       f"other than tensors (nothing was unpickled); accepted: "
                       f"{ACCEPTED}") from None
    except Exception as err:     # noqa: BLE001 -- corrupt, truncated, not a weights file
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise GGLError(f"{what}: cannot read {path}: corrupt, truncated or not a weights "
                       f"file ({reason}); accepted: {ACCEPTED}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise GGLError(f"{what}: {path} is not a state dict of tensors; accepted: {ACCEPTED}")
    return state
