"""Resolve a run once: a :class:`ggl.config.RunConfig` becomes a :class:`RunPlan`.

Every way into a run (the ``ggl run`` command, the Python API, a sweep cell, ``ggl
compare``) goes through :func:`resolve`, which checks every name and number that can be
checked without loading data or weights, with one clear ``GGLError`` for the first mistake,
and builds what the run is made of exactly once: the attack with its typed options, the
defense chain, the control and the device. Everything downstream takes the plan and
checks nothing again.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ggl import checks
from ggl.attacks import ATTACKS, Attack
from ggl.config import RunConfig, resolve_device
from ggl.contracts import Defense
from ggl.controls import CONTROLS
from ggl.data import DATASETS
from ggl.defenses import parse_defenses
from ggl.dropout import check_rate
from ggl.errors import GGLError
from ggl.models import MODELS


@dataclass(frozen=True)
class RunPlan:
    """A resolved run: the config as given and what it resolved to.

    Attributes:
        config: the run's configuration (unchanged: its canonical form gives cell ids).
        attack: the attack, built once; ``attack.options`` holds its resolved options.
        defenses: the client's defense chain, in order.
        control: the control's function (``ggl.controls.CONTROLS``), ``None`` for none.
        device: where the run computes.
    """

    config: RunConfig
    attack: Attack
    defenses: tuple[Defense, ...]
    control: Callable | None
    device: torch.device

    def defense_records(self) -> list[dict]:
        """The canonical defense chain for records (``BaseDefense.describe``)."""
        return [defense.describe() for defense in self.defenses]


def _check_protocol(config: RunConfig) -> None:
    if config.protocol not in RunConfig.PROTOCOLS:
        raise GGLError(f"--protocol must be one of {', '.join(RunConfig.PROTOCOLS)}, got "
                       f"{config.protocol!r}")
    if config.protocol == "fedavg":
        config.local_training().check()
        federation = config.federation().check()
        batch = config.local_batch_size
        if batch is not None and batch > config.batch_size and federation.clients == 1:
            raise GGLError(f"--local-batch-size {batch} is larger than the client's "
                           f"--batch-size {config.batch_size} images: give at most "
                           f"{config.batch_size}, or leave it out (one step per epoch over "
                           f"all of them)")
        return
    given = [FLAGS.get(name, f"--{name.replace('_', '-')}")
             for name in LOCAL_FIELDS + FEDERATION_FIELDS
             if getattr(config, name) != getattr(RunConfig, name)]
    if given:
        raise GGLError(f"{', '.join(given)}: local training and federated rounds are "
                       f"simulated for FedAvg clients; add --protocol fedavg (a FedSGD "
                       f"client shares one gradient; it is FedAvg with one local step)")


#: RunConfig fields of a FedAvg client's local training
LOCAL_FIELDS = ("local_epochs", "local_steps", "local_batch_size", "local_lr",
                "local_momentum", "local_weight_decay", "local_known")
#: the flag that sets a field away from its default, where it is not ``--field-name``
FLAGS = {"local_known": "--local-estimated"}
#: RunConfig fields of the simulated federation (``ggl.federation``)
FEDERATION_FIELDS = ("clients", "rounds", "target_round", "target_client", "dirichlet",
                     "secure_aggregation")


def resolve(config: RunConfig) -> RunPlan:
    """Check ``config`` and build its parts once (see the module docstring).

    Raises:
        GGLError: an unknown name, a number out of range, options that do not fit together.
    """
    attack_class = ATTACKS.choose(config.attack)
    MODELS.choose(config.model)
    DATASETS.choose(config.dataset)
    control = CONTROLS.choose(config.control)
    checks.seed("--seed", config.seed)
    checks.at_least("--batch-size", config.batch_size, 1)
    if config.model_mode not in ("eval", "train"):
        raise GGLError(f"--model-mode must be 'eval' or 'train', got {config.model_mode!r}")
    checks.at_least("--victim-steps", config.victim_steps, 0)
    for flag, value in (("--width", config.width), ("--resolution", config.resolution)):
        if value is not None:
            checks.at_least(flag, value, 1, "a whole number >= 1 (leave it out for the "
                                             "default)")
    if len(set(config.index)) != len(config.index):
        raise GGLError(f"--index {' --index '.join(map(str, config.index))} names an image "
                       f"twice: a client's batch holds distinct images")
    _check_protocol(config)
    checks.finite("--d_param", config.d_param)
    check_rate(config.dropout)
    device = resolve_device(config.device)
    defenses = tuple(parse_defenses(config.defense, config.d_param))
    if config.adaptive and config.protocol == "fedavg" and any(
            d.replaces_gradient for d in defenses):
        raise GGLError(f"--adaptive models {defenses[0].name} on one gradient; over a FedAvg "
                       f"client's local steps it is not modelled (leave out --adaptive)")
    if attack_class.needs_dropout and config.protocol == "fedavg":
        raise GGLError(f"--attack {config.attack} models the dropout masks of one FedSGD "
                       f"gradient: use it with --protocol fedsgd")
    if attack_class.needs_dropout and config.dropout == 0:
        raise GGLError(f"--attack {config.attack} models the victim's dropout masks: give "
                       f"the victim dropout, e.g. --dropout 0.25 (ggl list)")
    needed = attack_class.needs_defense
    if needed is not None and needed not in (d.name for d in defenses):
        raise GGLError(f"--attack {config.attack} attacks the {needed} defense: add "
                       f"--defense {needed}")
    attack = attack_class(seed=config.seed, adaptive=config.adaptive,
                          defense_known=config.defense_known, **config.attack_options())
    attack.check_protocol(config.protocol)
    return RunPlan(config, attack, defenses, control, device)
