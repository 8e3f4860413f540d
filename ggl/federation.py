"""Many FedAvg clients over several rounds: the attacked update comes from a trained model.

``--clients K`` splits the private data among K clients (IID, or non-IID by a
Dirichlet(alpha) draw of each class's share per client, as seed 001 and most FL papers do).
Rounds ``1 .. t-1`` are plain FedAvg: every client trains locally on its whole share from
the global weights (``ggl.local_training``, with the client-side defenses applied to its
update) and the server moves the global model by the size-weighted mean of the updates.
In round ``t`` (``--target-round``) the server attacks client ``c`` (``--target-client``),
which trains on ``--batch-size`` images drawn from its share — the private batch the
attack must rebuild. With ``--secure-aggregation`` the server sees only the round's
aggregate (the size-weighted mean of every client's update, the others trained on their
whole shares) and attacks that as if it were the target's update.

Rounds after ``t`` change nothing the attack sees, so they are not simulated.
Everything is seeded from ``--seed``: the split, every client's shuffling and defense draws.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from ggl import checks
from ggl.contracts import Defense
from ggl.errors import GGLError
from ggl.local_training import LocalTraining

#: the split's draws come from a stream of their own
SPLIT_SEED_OFFSET = 3_000_017
#: each (round, client) pair's shuffling and defense draws: seed + this x (its number + 1)
CLIENT_SEED_STRIDE = 10_007
#: Dirichlet draws tried before a split that leaves a client empty is an error
SPLIT_TRIES = 100
#: public images the global model's accuracy is measured on
ACCURACY_SAMPLE = 1000


@dataclass(frozen=True)
class Federation:
    """The simulated federation (``--clients``, ``--rounds``, ...).

    Attributes:
        clients: K clients sharing the private split.
        rounds: R rounds of the run; the attack happens in ``target_round`` (default R).
        target_round: t in 1..R; rounds before it train the global model.
        target_client: c in 0..K-1, the client whose round-t update is attacked.
        dirichlet: alpha of the non-IID split (smaller: fewer classes per client);
            None: IID (a uniform random split into near-equal shares).
        secure_aggregation: the server sees only the round's aggregate update.
    """

    clients: int = 1
    rounds: int = 1
    target_round: int | None = None
    target_client: int = 0
    dirichlet: float | None = None
    secure_aggregation: bool = False

    @property
    def attacked_round(self) -> int:
        return self.target_round or self.rounds

    @property
    def simulated(self) -> bool:
        """More than today's single client on an untrained model."""
        return self.clients > 1 or self.attacked_round > 1

    def check(self) -> "Federation":
        checks.at_least("--clients", self.clients, 1)
        checks.at_least("--rounds", self.rounds, 1)
        if self.target_round is not None and not 1 <= self.target_round <= self.rounds:
            raise GGLError(f"--target-round must be in 1..{self.rounds} (--rounds "
                           f"{self.rounds}), got {self.target_round}")
        if not 0 <= self.target_client < self.clients:
            raise GGLError(f"--target-client must be in 0..{self.clients - 1} (--clients "
                           f"{self.clients}), got {self.target_client}")
        if self.dirichlet is not None:
            checks.positive("--dirichlet", self.dirichlet)
        if self.secure_aggregation and self.clients < 2:
            raise GGLError("--secure-aggregation sums the updates of several clients: give "
                           "--clients 2 or more")
        return self

    def describe(self) -> str:
        split = "IID" if self.dirichlet is None else f"Dirichlet {self.dirichlet:g}"
        return (f"{self.clients} clients ({split}), round {self.attacked_round} of "
                f"{self.rounds}, client {self.target_client}"
                + (", secure aggregation" if self.secure_aggregation else ""))


def split_clients(labels: torch.Tensor, clients: int, dirichlet: float | None,
                  seed: int) -> list[list[int]]:
    """Indices of each client's share of a dataset with ``labels`` ``(n,)``.

    IID: a seeded permutation cut into ``clients`` near-equal shares. Dirichlet(alpha):
    for each class, proportions over the clients are drawn from Dirichlet(alpha, ..., alpha)
    and the class's (shuffled) images are cut at them; a draw that leaves a client with no
    image is drawn again (up to ``SPLIT_TRIES`` times, then an error).
    """
    n = len(labels)
    if clients > n:
        raise GGLError(f"--clients {clients} is larger than the private split ({n} images): "
                       f"give at most {n} clients")
    rng = np.random.default_rng(seed + SPLIT_SEED_OFFSET)
    if dirichlet is None:
        return [sorted(part.tolist()) for part in np.array_split(rng.permutation(n), clients)]
    classes = labels.cpu().numpy()
    for _ in range(SPLIT_TRIES):
        shares: list[list[int]] = [[] for _ in range(clients)]
        for c in np.unique(classes):
            members = rng.permutation(np.flatnonzero(classes == c))
            cuts = (np.cumsum(rng.dirichlet([dirichlet] * clients))[:-1]
                    * len(members)).astype(int)
            for share, part in zip(shares, np.split(members, cuts)):
                share += part.tolist()
        if min(map(len, shares)) > 0:
            return [sorted(share) for share in shares]
    raise GGLError(f"--dirichlet {dirichlet:g} left a client without images in "
                   f"{SPLIT_TRIES} draws for --clients {clients} over {n} images: give a "
                   f"larger --dirichlet or fewer --clients")


def client_seed(seed: int, round_: int, client: int, clients: int) -> int:
    """The draws (shuffling, defenses) of ``client`` in ``round_`` (1-based)."""
    return seed + CLIENT_SEED_STRIDE * ((round_ - 1) * clients + client + 1)


def weighted_mean(updates: Sequence[Sequence[torch.Tensor]],
                  sizes: Sequence[int]) -> tuple[torch.Tensor, ...]:
    """FedAvg's aggregate: ``sum_k n_k update_k / sum_k n_k``, per parameter."""
    total = float(sum(sizes))
    return tuple(sum(n / total * u[i] for u, n in zip(updates, sizes))
                 for i in range(len(updates[0])))


@dataclass
class OtherClients:
    """The target round's other clients, as secure aggregation adds them in.

    Attributes:
        updates: each other client's shared (defended) update.
        sizes: their share sizes (FedAvg's weights).
    """

    updates: list[tuple[torch.Tensor, ...]]
    sizes: list[int]

    def aggregate(self, target_update: Sequence[torch.Tensor],
                  target_size: int) -> tuple[torch.Tensor, ...]:
        """What the server sees: the size-weighted mean with the target's update in it."""
        return weighted_mean([tuple(target_update)] + self.updates,
                             [target_size] + self.sizes)


def apply_update(model: nn.Module, update: Sequence[torch.Tensor]) -> None:
    """``w <- w - update`` in place (an update is ``w0 - wE``)."""
    with torch.no_grad():
        for p, u in zip(model.parameters(), update):
            p.sub_(u)


def accuracy(model: nn.Module, public, device: torch.device) -> float:
    """The model's accuracy on (the first ``ACCURACY_SAMPLE`` images of) ``public``."""
    count = min(ACCURACY_SAMPLE, len(public))
    images = torch.stack([public[i][0] for i in range(count)]).to(device)
    labels = torch.tensor([int(public[i][1]) for i in range(count)], device=device)
    with torch.no_grad():
        return float((model(images).argmax(1) == labels).float().mean())


def train_rounds(model: nn.Module, private, shares: list[list[int]], federation: Federation,
                 training: LocalTraining, defenses: Sequence[Defense], seed: int,
                 device: torch.device) -> tuple[nn.Module, OtherClients | None]:
    """FedAvg rounds ``1 .. t-1`` from ``model`` (not modified): the global model of round
    t, and, under secure aggregation, the round-t updates of every client but the target.

    Each client shares :func:`ggl.scenario.client_share` of its whole share (the same
    local training and defenses the target uses)."""
    from ggl.scenario import client_share

    def client_data(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        items = [private[i] for i in shares[k]]
        return (torch.stack([image for image, _ in items]).to(device),
                torch.tensor([int(label) for _, label in items], device=device))

    data = [client_data(k) for k in range(federation.clients)]
    sizes = [len(share) for share in shares]
    model = copy.deepcopy(model)
    for round_ in range(1, federation.attacked_round):
        updates = [client_share(model, *data[k], training, defenses,
                                client_seed(seed, round_, k, federation.clients))[0]
                   for k in range(federation.clients)]
        apply_update(model, weighted_mean(updates, sizes))
    others = None
    if federation.secure_aggregation:
        round_ = federation.attacked_round
        rest = [k for k in range(federation.clients) if k != federation.target_client]
        others = OtherClients(
            [client_share(model, *data[k], training, defenses,
                          client_seed(seed, round_, k, federation.clients))[0] for k in rest],
            [sizes[k] for k in rest])
    return model, others


def target_round(model: nn.Module, data, federation: Federation, training: LocalTraining,
                 defenses: Sequence[Defense], *, batch_size: int, index: Sequence[int],
                 seed: int, device: torch.device
                 ) -> tuple[nn.Module, list[int], OtherClients | None, dict]:
    """Everything before the attacked update: the split of ``data.private``, the target's
    batch (``batch_size`` images of its share, ``index`` counting inside the share; checked
    before any round is trained), FedAvg rounds 1 .. t-1 from ``model``.

    Returns:
        ``(global model of round t, the batch's private indices, the other clients'
        round-t updates under secure aggregation or None, facts for the run's record)``.
    """
    from ggl.scenario import choose_indices

    labels = torch.tensor([int(data.private[i][1]) for i in range(len(data.private))])
    shares = split_clients(labels, federation.clients, federation.dirichlet, seed)
    share = shares[federation.target_client]
    positions = choose_indices(len(share), batch_size, index, seed,
                               f"client {federation.target_client}'s share of "
                               f"{federation.describe()}")
    model, others = train_rounds(model, data.private, shares, federation, training,
                                 defenses, seed, device)
    facts = {"setting": federation.describe(),
             "share_sizes": [len(s) for s in shares],
             "target_share_labels": labels[share].bincount(
                 minlength=data.num_classes).tolist(),
             "global_accuracy_public": accuracy(model, data.public, device)}
    return model, [share[i] for i in positions], others, facts
