"""The run configuration shared by the CLI, the Python API and sweeps.

A ``RunConfig`` is what a user writes; :func:`ggl.plan.resolve` checks it and turns it into
the parts of a run. This module imports no torch (``ggl --help`` stays fast).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ggl import constants
from ggl.errors import GGLError

#: options every attack understands; ``None`` keeps the attack's own (paper) default
COMMON_ATTACK_OPTIONS = ("budget", "lr", "tv", "distance", "layer_weights", "restarts", "init")


@dataclass
class RunConfig:
    """Everything that defines one attack run. ``None`` means "the default of that part".

    Threat model: ``dataset``/``index``/``batch_size`` pick the client's private batch,
    ``model``/``model_mode``/``weights``/``victim_steps`` the global model, and
    ``known_labels`` whether the server knows the labels. ``attack`` and the attack options
    configure the adversary; ``extra`` passes attack-specific options (e.g. ``signed``).
    ``control`` (``ggl.controls.CONTROLS``) replaces the shared update by a control's
    (``random-gradient``: noise), to measure what the attack reports without a leak.
    ``protocol``: ``fedsgd`` (one gradient of the batch) or ``fedavg`` (the client trains
    ``local_epochs`` epochs of SGD over mini-batches of ``local_batch_size`` images, all of
    them when None, or ``local_steps`` steps, and shares its weight update;
    ``ggl.local_training``); ``local_known``: the server knows those hyperparameters, else
    it knows the schedule and estimates the rest (``estimate_training``). ``clients``, ``rounds``, ``target_round``, ``target_client``,
    ``dirichlet``, ``secure_aggregation``: the federation the client is one of
    (``ggl.federation``; the default, one client in round 1, is a single client).
    """

    #: the protocols a client may follow
    PROTOCOLS = ("fedsgd", "fedavg")

    attack: str = "ggl"
    model: str = "lenet"
    dataset: str = "mnist"
    data_root: str | None = None
    download: bool = False
    resolution: int | None = None
    index: tuple[int, ...] = ()
    batch_size: int = 1
    seed: int = constants.DEFAULT_SEED
    device: str = "auto"
    known_labels: bool = False
    model_mode: str = "eval"
    width: int | None = None
    dropout: float = 0.0
    weights: str | None = None
    victim_steps: int = 0
    budget: int | None = None
    lr: float | None = None
    tv: float | None = None
    distance: str | None = None
    layer_weights: str | None = None
    restarts: int | None = None
    init: str | None = None
    extra: dict = field(default_factory=dict)
    defense: tuple[str, ...] = ()
    d_param: float | None = None
    adaptive: bool = False
    defense_known: bool = True
    control: str = "none"
    protocol: str = "fedsgd"
    local_epochs: int = 1
    local_steps: int | None = None
    local_batch_size: int | None = None
    local_lr: float = 0.1
    local_momentum: float = 0.0
    local_weight_decay: float = 0.0
    local_known: bool = True
    clients: int = 1
    rounds: int = 1
    target_round: int | None = None
    target_client: int = 0
    dirichlet: float | None = None
    secure_aggregation: bool = False
    lpips_weights: str | None = None
    out: str | None = None

    def attack_options(self) -> dict:
        """The attack's options this config sets (the common ones and ``extra``)."""
        options = {name: getattr(self, name) for name in COMMON_ATTACK_OPTIONS}
        options.update(self.extra)
        return {k: v for k, v in options.items() if v is not None}

    def to_dict(self) -> dict:
        return asdict(self)

    def local_training(self):
        """The client's ``ggl.local_training.LocalTraining`` (FedAvg), unchecked."""
        from ggl.local_training import LocalTraining

        return LocalTraining(epochs=self.local_epochs, steps=self.local_steps,
                             batch_size=self.local_batch_size, lr=self.local_lr,
                             momentum=self.local_momentum,
                             weight_decay=self.local_weight_decay)

    def federation(self):
        """The simulated federation (``ggl.federation.Federation``), unchecked."""
        from ggl.federation import Federation

        return Federation(clients=self.clients, rounds=self.rounds,
                          target_round=self.target_round, target_client=self.target_client,
                          dirichlet=self.dirichlet,
                          secure_aggregation=self.secure_aggregation)


def resolve_device(name: str) -> "torch.device":
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise GGLError(f"--device {name} was asked for but no CUDA GPU is available; "
                           f"use --device cpu or --device auto")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise GGLError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:N")
