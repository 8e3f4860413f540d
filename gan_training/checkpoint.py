"""Training checkpoints: one self-contained safetensors file plus a readable JSON copy.

``checkpoint.safetensors`` holds every tensor of the training state (generator, critic, both
Adam states, the random generator's state, the generator's moving average when kept) and, in its string metadata, the JSON record
(training config, step, loss history). Written atomically, it is always consistent with
itself even when a run is killed mid-write; ``checkpoint.json`` is the same record for people.
``generator.safetensors`` + ``generator.json`` are the usable prior (see
:func:`ggl.generators.wgan_gp.load_generator`).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ggl.errors import GGLError
from ggl.results import atomic_write_bytes, atomic_write_json

FORMAT = "ggl-train-prior-checkpoint/1"


def _flatten_optimizer(prefix: str, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    tensors = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"{prefix}.{index}.{key}"] = torch.as_tensor(value)
    return tensors


def _restore_optimizer(prefix: str, optimizer: torch.optim.Optimizer,
                       tensors: dict[str, torch.Tensor]) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith(prefix + "."):
            index, key = name[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(index), {})[key] = value
    current = optimizer.state_dict()
    optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})


def save_training_state(path: Path, record: dict, generator: torch.nn.Module,
                        critic: torch.nn.Module, optimizers: dict[str, torch.optim.Optimizer],
                        rng: torch.Generator, averaged: torch.nn.Module | None = None) -> None:
    """Write ``path`` (.safetensors) and its ``.json`` twin atomically."""
    from safetensors.torch import save

    tensors = {f"generator.{k}": v for k, v in generator.state_dict().items()}
    tensors.update({f"critic.{k}": v for k, v in critic.state_dict().items()})
    for name, optimizer in optimizers.items():
        tensors.update(_flatten_optimizer(f"optimizer_{name}", optimizer))
    if averaged is not None:
        tensors.update({f"averaged.{k}": v for k, v in averaged.state_dict().items()})
    tensors["rng"] = rng.get_state()
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    payload = save(tensors, metadata={"format": FORMAT, "record": json.dumps(record)})
    atomic_write_bytes(path, payload)
    atomic_write_json(path.with_suffix(".json"), record)


def _read(path: Path, with_tensors: bool) -> tuple[dict, dict[str, torch.Tensor]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()} if with_tensors else {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise GGLError(f"training checkpoint {path} is corrupt or truncated ({err}); "
                       f"it was left untouched: restore it, or train into another --out") from None
    if metadata.get("format") != FORMAT:
        raise GGLError(f"{path} is not a ggl train-prior checkpoint (format "
                       f"{metadata.get('format')!r}, expected {FORMAT!r})")
    return json.loads(metadata["record"]), tensors


def read_training_state(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(record, tensors)`` of a training checkpoint, or one clear error if unreadable."""
    return _read(path, with_tensors=True)


def read_training_record(path: Path) -> dict:
    """A training checkpoint's JSON record only (no tensor is read)."""
    return _read(path, with_tensors=False)[0]


def restore_training_state(tensors: dict[str, torch.Tensor], generator: torch.nn.Module,
                           critic: torch.nn.Module, optimizers: dict[str, torch.optim.Optimizer],
                           rng: torch.Generator, averaged: torch.nn.Module | None = None) -> None:
    """Load what :func:`save_training_state` wrote into freshly built objects."""
    def part(prefix):
        return {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}

    device = next(generator.parameters()).device
    generator.load_state_dict(part("generator"))
    critic.load_state_dict(part("critic"))
    if averaged is not None:
        averaged.load_state_dict(part("averaged"))
    for name, optimizer in optimizers.items():
        prefix = f"optimizer_{name}"
        _restore_optimizer(prefix, optimizer, {k: v.to(device) if not k.endswith(".step") else v
                                               for k, v in tensors.items()
                                               if k.startswith(prefix + ".")})
    rng.set_state(tensors["rng"])


#: the usable prior's weights file in an output folder
GENERATOR_FILE = "generator.safetensors"


def save_generator(directory: Path, generator: torch.nn.Module, record: dict) -> None:
    """The usable prior: ``generator.safetensors`` (weights) + ``generator.json`` (record)."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
    atomic_write_bytes(directory / GENERATOR_FILE,
                       save(state, metadata={"record": json.dumps(record)}))
    atomic_write_json(directory / "generator.json", record)
