"""What every attack shares: the options it is built with and the Reconstruction it returns."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, ClassVar

import torch
from torch import nn

from ggl.ceiling import LatentSearch
from ggl.checks import MAX_BUDGET
from ggl.contracts import Observation
from ggl.errors import GGLError
from ggl.objective import GradientMatching
from ggl.options import build

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
        cpu_time: CPU seconds of this process (all threads, user + system) spent in
            ``reconstruct``: the attack's cost on a shared or loaded machine.
        info: attack-specific facts (label method, restart losses, failures, ...).
        latent_search: a latent attack's prior, labels, returned latents and objective, for
            the metrics' ceiling and search gap (``None`` for pixel attacks).
    """

    images: torch.Tensor
    labels: torch.Tensor
    loss: float
    history: list[float] = field(default_factory=list)
    snapshots: list[tuple[int, torch.Tensor]] = field(default_factory=list)
    evaluations: int = 0
    iterations: int = 0
    wall_time: float = 0.0
    cpu_time: float = 0.0
    info: dict = field(default_factory=dict)
    latent_search: LatentSearch | None = None


class Attack:
    """Base class: an attack is built from options and reconstructs from an Observation.

    Subclasses set ``name``, an ``Options`` dataclass whose defaults are the paper's and
    whose annotations are the one schema of the attack's options (:mod:`ggl.options`: the
    CLI, ``--set``, sweeps and ``ggl list`` read it), check what the types cannot say in
    ``_validate`` (ranges, combinations), and implement ``_reconstruct``.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    Options: ClassVar[type]
    #: the attack models the victim's dropout (the run needs ``--dropout`` > 0)
    needs_dropout: ClassVar[bool] = False
    #: the name of the defense the attack breaks (the run must apply it), if any
    needs_defense: ClassVar[str | None] = None
    #: the protocol whose update the attack inverts (``fedavg``), if only one
    needs_protocol: ClassVar[str | None] = None
    #: ``honest``: the server sends the model as it is (honest-but-curious); ``active``:
    #: it sends :meth:`server_model`'s modification of it (a malicious server)
    threat_model: ClassVar[str] = "honest"

    def __init__(self, seed: int = 0, adaptive: bool = False, defense_known: bool = True,
                 **overrides):
        self.options = build(self.Options, overrides, f"attack {self.name!r}")
        self.seed = seed
        self.adaptive = adaptive
        self.defense_known = defense_known
        self._validate()

    def _validate(self) -> None:
        budget = getattr(self.options, "budget", 1)
        if not 1 <= budget <= MAX_BUDGET:
            raise GGLError(f"--budget must be in 1..{MAX_BUDGET:,} for attack {self.name!r}, "
                           f"got {budget}")

    def check_protocol(self, protocol: str) -> None:
        """Refuse, before any work, a protocol (``fedsgd``/``fedavg``) the attack as
        configured cannot invert."""
        if self.needs_protocol not in (None, protocol):
            raise GGLError(f"--attack {self.name} inverts a {self.needs_protocol} update: add "
                           f"--protocol {self.needs_protocol}")
        if protocol == "fedavg" and self.adaptive and not self.simulates_updates():
            raise GGLError(f"--adaptive with --protocol fedavg models the defense on the "
                           f"weight update, which --attack {self.name} reads as one gradient "
                           f"(update / lr): use ig-multi, dlf or ggl")

    def server_model(self, model: nn.Module, public_images: torch.Tensor
                     ) -> tuple[nn.Module, dict | None]:
        """The model the server sends instead of ``model``, and what it changed (an
        ``active`` attack's; ``public_images`` ``(N, C, H, W)`` are the server's data).
        The honest server sends ``model`` itself."""
        return model, None

    def simulates_updates(self) -> bool:
        """Whether the attack scores candidates by their simulated FedAvg update
        (:meth:`update_objective`) rather than reading the update as a gradient."""
        return self.needs_protocol == "fedavg"

    def reconstruct(self, observation: Observation, progress: Progress | None = None
                    ) -> Reconstruction:
        """Reconstruct the private batch behind ``observation.gradient``."""
        if not isinstance(observation, Observation):
            raise TypeError("attacks take an Observation (the server's view), nothing else")
        start, cpu_start = time.perf_counter(), time.process_time()
        self.modelled_defense = None
        result = self._reconstruct(observation, progress or (lambda *args: None))
        result.wall_time = time.perf_counter() - start
        result.cpu_time = time.process_time() - cpu_start
        if self.modelled_defense is not None:
            result.info["defense_model"] = {
                "parameters": "known" if self.defense_known else "estimated",
                "likelihood": self.modelled_defense.likelihood_name,
                "dropped_layers": list(self.modelled_defense.dropped_layers),
                "defenses": self.modelled_defense.facts}
        return result

    def _reconstruct(self, observation: Observation, progress: Progress) -> Reconstruction:
        raise NotImplementedError

    def defense_model(self, observation: Observation):
        """With ``adaptive``, the attacker's model of the client's defenses (an
        ``ggl.defenses.AttackerModel``); otherwise None: the defense is ignored."""
        if not self.adaptive or not observation.defenses:
            return None
        from ggl.defenses import model_chain

        # a FedAvg client defends its update: the defense's parameters are in its units
        shared = observation.weight_update
        observed = observation.gradient if shared is None else shared.update
        return model_chain(observation.defenses, observed, known=self.defense_known,
                           batch_size=observation.batch_size)

    def update_objective(self, observation: Observation, *, distance: str, layer_weights: str,
                         tv: float, order: list[list[int]] | None = None):
        """The FedAvg counterpart of :meth:`matching_objective`: candidates scored by their
        simulated weight update (``ggl.attacks.weight_update.UpdateMatching``), the
        defense modelled on the update with ``adaptive``."""
        from ggl.attacks.weight_update import UpdateMatching

        if observation.weight_update is None:
            raise GGLError(f"--attack {self.name} inverts a FedAvg weight update: add "
                           f"--protocol fedavg")
        self.modelled_defense = self.defense_model(observation)
        return UpdateMatching(observation, distance, layer_weights, tv, order=order,
                              defense=self.modelled_defense)

    def matching_objective(self, observation: Observation, *, distance: str,
                           layer_weights: str, tv: float, path: str = "auto",
                           chunk_size: int | None = None):
        """The attack's ``GradientMatching`` objective. With ``adaptive`` the defense is
        modelled: trial gradients go through its transform, defended layers it drops are
        left out, and against noise its likelihood replaces ``distance`` (summed over every
        entry: the Bayes-optimal loss)."""
        model = self.defense_model(observation)
        self.modelled_defense = model
        transform, dropped = None, ()
        if model is not None:
            transform, dropped = model.transform, model.dropped_layers
            if model.likelihood is not None:
                distance, layer_weights = model.likelihood, "sum"
        return GradientMatching(observation.model, observation.gradient, distance=distance,
                                layer_weights=layer_weights, tv=tv, path=path,
                                chunk_size=chunk_size, trial_transform=transform,
                                dropped_layers=dropped)

    def generator(self) -> torch.Generator:
        """A CPU generator seeded by the run's seed: draws are made on the CPU, then moved, so
        a seed gives the same start on every device."""
        return torch.Generator().manual_seed(self.seed)


def step_in_box(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scheduler,
                pixels: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> None:
    """One optimizer (and scheduler) step on ``loss``, then ``pixels`` clamped back into the
    valid box ``[low, high]`` in place."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    with torch.no_grad():
        torch.max(torch.min(pixels, high), low, out=pixels)
