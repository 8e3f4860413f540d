"""GGL's search as a plan of stages sharing one evaluation budget (``--stages``).

A plan is a comma-separated list of ``NAME[:EVALUATIONS]``, run in order::

    sample:2000,CMA:18000,adam:5000,gifd:3000

* ``sample``: score that many latents drawn from the prior (batched, no search) and hand
  the ``starts`` best to the next stage: restarts seeded from the prior.
* an optimizer (any ``--ng_method``: ``CMA`` or another nevergrad name, ``BO``/``turbo``,
  ``adam``): a search from each current start, the stage's budget split evenly between
  them; the best latent of each search is a start of the next stage. A black-box stage
  followed by ``adam`` is the hybrid search (gradient descent in latent space through
  generator and victim).
* ``gias``: after the latent stages, tune a copy of the generator's weights for the best
  latent (Jeon et al., NeurIPS 2021), see :mod:`ggl.attacks.generator_stages`.
* ``gifd``: after the latent stages (and ``gias``), search the generator's intermediate
  features layer by layer inside l1 balls (Fang et al., ICCV 2023).

Every evaluation of every stage counts in the budget: one latent scored, one Adam step,
one GIAS or GIFD step. A stage without a count gets what the others leave of ``--budget``;
when every stage has one, they must add up to ``--budget`` (or define it when it is not
given). The plan without ``--stages`` is ``{ng_method}:{budget}``: GGL as published.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import torch

from ggl.errors import GGLError
from ggl.optimizers.base import LatentOptimizer

SAMPLE = "sample"
GIAS = "gias"
GIFD = "gifd"
#: stages that act on the generator after the latent search, in the order they may come
GENERATOR_STAGES = (GIAS, GIFD)
#: latents scored per batched call in a ``sample`` stage
SAMPLE_CHUNK = 500


@dataclass(frozen=True)
class Stage:
    """One step of a plan: ``name`` (``sample``, an optimizer name, ``gias``, ``gifd``) and
    the evaluations it may use."""

    name: str
    budget: int

    @property
    def kind(self) -> str:
        """``sample``, ``gias``, ``gifd`` or ``optimizer``."""
        return self.name if self.name in (SAMPLE, *GENERATOR_STAGES) else "optimizer"

    def __str__(self) -> str:
        return f"{self.name}:{self.budget}"


def valid_stage_names() -> str:
    """What ``--stages`` accepts, for messages."""
    from ggl.optimizers import OPTIMIZERS

    return (f"{SAMPLE}, {GIAS}, {GIFD}, or a latent optimizer "
            f"({', '.join(OPTIMIZERS.names(include_more=False))}, or any nevergrad optimizer "
            f"such as CMA, DiagonalCMA, TwoPointsDE, PSO; `ggl list` shows them all)")


def parse_plan(spec: str, budget: int | None) -> tuple[Stage, ...]:
    """``--stages`` text -> the stages with their budgets.

    Args:
        spec: ``NAME[:EVALUATIONS],...`` (see the module docstring).
        budget: ``--budget`` when the user gave it, else ``None`` (then every stage needs a
            count and the plan's total is the budget).

    Raises:
        GGLError: an unknown name, a bad count, counts that do not fit ``budget``, or an
            order the stages cannot run in.
    """
    from ggl.optimizers import OPTIMIZERS

    names, counts = [], []
    for part in spec.split(","):
        part = part.strip()
        name, _, count = part.partition(":")
        name = name.strip()
        if not name:
            raise GGLError(f"--stages {spec!r}: an empty stage; write NAME[:EVALUATIONS],... "
                           f"e.g. sample:2000,CMA:18000,adam:5000")
        if name not in (SAMPLE, *GENERATOR_STAGES) and name not in OPTIMIZERS:
            raise GGLError(f"--stages: unknown stage {name!r}; valid: {valid_stage_names()}")
        if count.strip():
            try:
                value = int(count)
            except ValueError:
                raise GGLError(f"--stages: the budget of {name!r} must be a whole number of "
                               f"evaluations, got {count.strip()!r}") from None
            if value < 1:
                raise GGLError(f"--stages: the budget of {name!r} must be at least 1, "
                               f"got {value}")
            counts.append(value)
        else:
            counts.append(None)
        names.append(name)
    open_stages = [n for n, c in zip(names, counts) if c is None]
    given = sum(c for c in counts if c is not None)
    if len(open_stages) > 1:
        raise GGLError(f"--stages: at most one stage may leave out its budget (it gets the "
                       f"rest of --budget); {', '.join(open_stages)} do")
    if open_stages:
        if budget is None:
            raise GGLError(f"--stages: {open_stages[0]!r} has no budget and no --budget is "
                           f"given to take it from; give NAME:EVALUATIONS or --budget")
        if given >= budget:
            raise GGLError(f"--stages: the other stages use {given} of --budget {budget} "
                           f"evaluations, leaving nothing for {open_stages[0]!r}")
        counts = [budget - given if c is None else c for c in counts]
    elif budget is not None and given != budget:
        raise GGLError(f"--stages: the stage budgets add up to {given} evaluations but "
                       f"--budget is {budget}; make them agree or leave one stage's out")
    plan = tuple(Stage(n, c) for n, c in zip(names, counts))
    check_order(plan)
    return plan


def check_order(plan: tuple[Stage, ...]) -> None:
    """``sample`` only first, at least one latent stage before ``gias``/``gifd``, each of
    those at most once and in that order, nothing latent after them."""
    kinds = [s.kind for s in plan]
    if SAMPLE in kinds[1:]:
        raise GGLError("--stages: 'sample' seeds the search from the prior, so it can only "
                       "be the first stage")
    latent = [k in (SAMPLE, "optimizer") for k in kinds]
    if not latent[0]:
        raise GGLError(f"--stages: {plan[0].name!r} needs a latent to start from; put a "
                       f"latent stage (sample or an optimizer) first")
    first_generator = latent.index(False) if False in latent else len(plan)
    if any(latent[first_generator:]):
        raise GGLError("--stages: gias and gifd change the generator, so they come after "
                       "every latent stage (sample, optimizers)")
    tail = kinds[first_generator:]
    if tail not in ([], [GIAS], [GIFD], [GIAS, GIFD]):
        raise GGLError(f"--stages: after the latent search the stages can be gias, gifd or "
                       f"gias then gifd, each once; got {', '.join(tail)}")


@dataclass
class Candidate:
    """A start for the next stage: the searched vector ``(n,)`` and its objective."""

    vector: torch.Tensor
    loss: float = math.inf


@dataclass
class StageRecord:
    """What one stage did (for run.json): its name, budget, evaluations, seconds, how many
    starts it ran from, and the best objective it reached."""

    stage: str
    budget: int
    evaluations: int = 0
    seconds: float = 0.0
    starts: int = 1
    best_objective: float = math.inf
    facts: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"stage": self.stage, "budget": self.budget, "evaluations": self.evaluations,
                "seconds": self.seconds, "starts": self.starts,
                "best_objective": self.best_objective, **self.facts}


#: ``loss(vectors (P, n), differentiable) -> (P,)``
VectorLoss = Callable[[torch.Tensor, bool], torch.Tensor]
#: ``report(evaluations done in this trial, best loss, best vector (n,))``
TrialReport = Callable[[int, float, torch.Tensor], None]


def run_latent_stages(stages: tuple[Stage, ...], *, loss: VectorLoss,
                      draw: Callable[[int], torch.Tensor], starts: int,
                      build_optimizer: Callable[[str, int], object],
                      seed_of: Callable[[int], int], report: TrialReport,
                      batched: bool = True
                      ) -> tuple[list[Candidate], list[float], list[StageRecord]]:
    """Run the latent stages of a plan.

    Args:
        stages: the plan's ``sample`` and optimizer stages, in order.
        loss: the attack's objective on searched vectors.
        draw: ``draw(count) -> (count, n)`` vectors from the prior (CPU).
        starts: how many starts a ``sample`` stage keeps (and how many prior draws start
            a plan that begins with an optimizer).
        build_optimizer: ``(method, search) -> LatentOptimizer`` seeded for search number
            ``search``; ``seed_of(search)`` is that seed.
        report: progress, with evaluations counted over the whole plan.
        batched: whether searches from several starts may share one batched objective
            call (not when each start carries its own dropout masks).

    Returns:
        The final candidates (best first), the best-so-far loss after every evaluation,
        and one record per stage.
    """
    # the prior draws a plan starts from (a leading sample stage replaces them; they are
    # drawn anyway, so a plan's later draws do not depend on its first stage)
    candidates = [Candidate(v) for v in draw(starts)]
    history: list[float] = []
    records: list[StageRecord] = []
    done = searches = 0
    for stage in stages:
        began = time.perf_counter()
        record = StageRecord(stage.name, stage.budget, starts=len(candidates))
        if stage.kind == SAMPLE:
            candidates = _sample(stage.budget, starts, loss, draw, history,
                                 lambda n, best, vector: report(done + n, best, vector))
            record.evaluations, record.starts = stage.budget, 1
            record.facts["kept"] = len(candidates)
        else:
            optimizer = build_optimizer(stage.name, searches)
            seeds = [seed_of(searches + i) for i in range(len(candidates))]
            searches += len(candidates)
            minimize = (optimizer.minimize_starts if batched else
                        partial(LatentOptimizer.minimize_starts, optimizer))
            results = minimize(lambda v, d=optimizer.differentiable: loss(v, d),
                               torch.stack([c.vector for c in candidates]), stage.budget,
                               lambda n, _budget, best, vector: report(done + n, best, vector),
                               seeds)
            for result in results:
                extend_history(history, result.history)
                record.evaluations += result.evaluations
            candidates = sorted((Candidate(r.latent, r.loss) for r in results),
                                key=lambda c: c.loss)
            record.facts["optimizer"] = results[0].info
        done += record.evaluations
        record.seconds = time.perf_counter() - began
        record.best_objective = candidates[0].loss
        records.append(record)
    return candidates, history, records


def extend_history(history: list[float], losses: list[float]) -> None:
    """Append a search's best-so-far losses to the plan's, keeping it a running minimum."""
    best = history[-1] if history else math.inf
    for value in losses:
        best = min(best, value)
        history.append(best)


def _sample(budget: int, keep: int, loss: VectorLoss, draw, history: list[float],
            report) -> list[Candidate]:
    """Score ``budget`` prior draws in batches; the ``keep`` lowest become the starts."""
    kept_vectors = torch.empty(0)
    kept_losses = torch.empty(0)
    scored = 0
    while scored < budget:
        vectors = draw(min(SAMPLE_CHUNK, budget - scored))
        losses = loss(vectors, False).detach().cpu().float()
        losses = torch.where(torch.isfinite(losses), losses, torch.full_like(losses, math.inf))
        extend_history(history, losses.tolist())
        scored += len(vectors)
        kept_vectors = torch.cat([kept_vectors.view(-1, vectors.shape[1]), vectors])
        kept_losses = torch.cat([kept_losses, losses])
        order = kept_losses.argsort()[:keep]
        kept_vectors, kept_losses = kept_vectors[order], kept_losses[order]
        report(scored, kept_losses[0].item(), kept_vectors[0])
    return [Candidate(v, l) for v, l in zip(kept_vectors, kept_losses.tolist())]
