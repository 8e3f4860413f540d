"""What every attack shares: the options it is built with and the Reconstruction it returns."""
from __future__ import annotations

import time
from dataclasses import dataclass, field, fields, replace
from typing import Callable, ClassVar

import torch

from ggl.errors import GGLError
from ggl.scenario import Observation

#: progress(iteration, budget, loss) — called by attacks as they go
Progress = Callable[[int, int, float], None]


@dataclass
class Reconstruction:
    """The result of an attack.

    Attributes:
        images: ``(B, C, H, W)`` in the victim's normalized space.
        labels: ``(B,)`` labels the attack used or recovered.
        loss: the gradient-matching loss of ``images`` (the attack's own selection criterion).
        history: the loss at each iteration (the best of the iteration for L-BFGS steps).
        snapshots: ``(iteration, images (B, C, H, W) on CPU)`` pairs for the progress GIF.
        evaluations: objective evaluations used (one candidate = one evaluation).
        iterations: optimizer iterations run (summed over restarts).
        wall_time: seconds spent in ``reconstruct``.
        info: attack-specific facts (label method, restart losses, failures, ...).
    """

    images: torch.Tensor
    labels: torch.Tensor
    loss: float
    history: list[float] = field(default_factory=list)
    snapshots: list[tuple[int, torch.Tensor]] = field(default_factory=list)
    evaluations: int = 0
    iterations: int = 0
    wall_time: float = 0.0
    info: dict = field(default_factory=dict)


class Attack:
    """Base class: an attack is built from options and reconstructs from an Observation.

    Subclasses set ``name``, an ``Options`` dataclass whose defaults are the paper's, and
    implement ``_reconstruct(observation, progress)``.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    Options: ClassVar[type]

    def __init__(self, seed: int = 0, adaptive: bool = False, **overrides):
        valid = {f.name for f in fields(self.Options)}
        unknown = set(overrides) - valid
        if unknown:
            raise GGLError(f"attack {self.name!r} has no option(s) {', '.join(sorted(unknown))}; "
                           f"its options: {', '.join(sorted(valid))}")
        self.options = replace(self.Options(), **{k: v for k, v in overrides.items()
                                                  if v is not None})
        self.seed = seed
        self.adaptive = adaptive
        self._validate()

    def _validate(self) -> None:
        budget = getattr(self.options, "budget", 1)
        if budget < 1:
            raise GGLError(f"--budget must be at least 1 for attack {self.name!r}, got {budget}")

    def reconstruct(self, observation: Observation, progress: Progress | None = None
                    ) -> Reconstruction:
        """Reconstruct the private batch behind ``observation.gradient``."""
        if not isinstance(observation, Observation):
            raise TypeError("attacks take an Observation (the server's view), nothing else")
        start = time.perf_counter()
        result = self._reconstruct(observation, progress or (lambda *args: None))
        result.wall_time = time.perf_counter() - start
        return result

    def _reconstruct(self, observation: Observation, progress: Progress) -> Reconstruction:
        raise NotImplementedError

    def defense_model(self, observation: Observation):
        """With ``adaptive``, the attacker-side model of the client's defenses (a transform
        of trial gradients, see ``ggl.defenses``); otherwise None: the defense is ignored."""
        if not self.adaptive or not observation.defenses:
            return None
        from ggl.defenses import attacker_transform

        return attacker_transform(observation.defenses, observation.gradient)

    def generator(self) -> torch.Generator:
        """A CPU generator seeded by the run's seed: draws are made on the CPU, then moved, so
        a seed gives the same start on every device."""
        return torch.Generator().manual_seed(self.seed)
