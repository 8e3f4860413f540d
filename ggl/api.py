"""Python API: build a ``RunConfig``, ``run`` it, get the record and the tensors back.

Example::

    from ggl import RunConfig, run
    result = run(RunConfig(attack="idlg", model="lenet", index=(3,), budget=50))
    print(result.record["metrics"]["psnr"])
    result.reconstruction.images      # (B, C, H, W), normalized
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path

import torch

from ggl import checks, constants
from ggl.allocator import keep_freed_memory
from ggl.attacks.base import Progress, Reconstruction
from ggl.ceiling import ceiling_scores
from ggl.config import RunConfig
from ggl.contracts import Observation, Secret
from ggl.data import ImageData, load_dataset
from ggl.errors import GGLError
from ggl.judge import build_gallery, load_judge
from ggl.metrics import LPIPS, Scores, score
from ggl.models import build_victim, load_weights, train_victim
from ggl.plan import RunPlan, resolve
from ggl.results import atomic_write_json, downsample, library_versions, save_images
from ggl.scenario import Scenario, choose_indices

#: how many public images the server uses for its own estimates (label counts)
PUBLIC_SAMPLE = 64


@dataclass
class RunResult:
    """Everything one run produced: the JSON record and the tensors behind it."""

    record: dict
    reconstruction: Reconstruction
    observation: Observation
    secret: Secret
    out: Path | None


def prepare(plan: RunConfig | RunPlan) -> tuple[Scenario, ImageData]:
    """Load the data, build (and optionally train) the victim, pick the private batch (a
    config is resolved first)."""
    plan = plan if isinstance(plan, RunPlan) else resolve(plan)
    config, device, defenses = plan.config, plan.device, plan.defenses
    data = load_dataset(config.dataset, config.data_root, config.download, config.resolution)
    # model extensions (PRECODE) are part of the global model: weights trained with one
    # belong to the wrapped model, so they are loaded after wrapping
    wrapping = [d.name for d in defenses if d.wraps_model]
    model = build_victim(config.model, data.channels, data.resolution, data.num_classes,
                         seed=config.seed, width=config.width, mode=config.model_mode,
                         weights=None if wrapping else config.weights,
                         dropout=config.dropout).to(device)
    for defense in defenses:
        model = defense.wrap_model(model, seed=config.seed).to(device)
    if wrapping and config.weights:
        load_weights(model, config.weights, f"{config.model} + {' + '.join(wrapping)}")
    train_victim(model, data.public, config.victim_steps, seed=config.seed, device=device)
    training = config.local_training() if config.protocol == "fedavg" else None
    federation = config.federation()
    others, facts = None, None
    if federation.simulated:       # the global model of the target round, trained by FedAvg
        from ggl.federation import target_round

        model, indices, others, facts = target_round(
            model, data, federation, training, defenses, batch_size=config.batch_size,
            index=config.index, seed=config.seed, device=device)
    else:
        indices = choose_indices(len(data.private), config.batch_size, config.index,
                                 config.seed)
    images, labels = data.private_batch(indices)
    sample = range(min(PUBLIC_SAMPLE, len(data.public)))
    public = torch.stack([data.public[i][0] for i in sample])
    public_labels = torch.tensor([int(data.public[i][1]) for i in sample])
    server_sent = None
    if plan.attack.threat_model == "active":   # a malicious server modifies what it sends,
        server_public = torch.stack([data.public[i][0] for i in range(len(data.public))])
        model, server_sent = plan.attack.server_model(model, server_public.to(device))
    scenario = Scenario(model, images.to(device), labels.to(device),
                        num_classes=data.num_classes, mean=data.mean, std=data.std,
                        indices=indices, known_labels=config.known_labels,
                        public_images=public.to(device), domain=data.name,
                        defenses=defenses, seed=config.seed, local_training=training,
                        other_clients=others, federation=facts,
                        local_known=config.local_known, public_labels=public_labels.to(device),
                        server_sent=server_sent)
    return scenario, data


def honest_score(observation: Observation, reconstruction: Reconstruction, secret: Secret,
                 data: ImageData, device: torch.device, lpips_metric: LPIPS | None = None
                 ) -> Scores:
    """Every metric of a reconstruction: PSNR/SSIM/LPIPS/labels, the judge's accuracy,
    identifiability and, for latent attacks, the prior's ceiling and the search gap."""
    judge, note = load_judge(data, device)
    judge_facts = {"available": False, "reason": note} if judge is None else \
        {"available": True, **judge.facts}
    gallery = build_gallery(data, judge, secret.indices, secret.images)
    scores = score(observation.model, reconstruction.images, reconstruction.labels,
                   secret.images, secret.labels, data.mean, data.std, lpips_metric,
                   judge=judge, judge_facts=judge_facts, gallery=gallery)
    search = reconstruction.latent_search
    if search is None:
        scores.ceiling_note = ("not applicable: a pixel-space attack searches no prior "
                               "(the ceiling and the search gap are for latent attacks)")
        return scores
    keys = ([(data.name, data.resolution, "private", i) for i in secret.indices]
            if len(secret.indices) == len(secret.images) else
            [("image", hash(image.cpu().numpy().tobytes())) for image in secret.images])
    ceiling = ceiling_scores(search, secret.images, scores.matching, keys)
    scores.ceiling_psnr, scores.search_gap = ceiling["ceiling_psnr"], ceiling["search_gap"]
    scores.search = {k: ceiling[k] for k in ("objective_found", "objective_ceiling")}
    scores.per_image.update(ceiling["per_image"])
    scores.ceiling_note = ("the true image projected into the prior (pixel MSE, Adam from "
                           "several starts); search_gap = objective(found latent) - "
                           "objective(projected latent): > 0 the search stopped short, "
                           "< 0 the objective prefers another image")
    return scores


def default_out(config: RunConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return constants.OUTPUT_DIR / f"{config.attack}_{config.model}_{config.dataset}_{stamp}"


def output_folder(config: RunConfig, overwrite: bool = False) -> Path:
    """Where a run writes (``config.out`` or :func:`default_out`), checked before any work:
    a folder that can be written and holds no run yet (``overwrite`` replaces one)."""
    out = Path(config.out) if config.out else default_out(config)
    checks.writable_folder(out, "--out")
    if (out / "run.json").exists() and not overwrite:
        raise GGLError(f"--out {out} already holds a run (run.json): give another --out, "
                       f"or --overwrite to replace it")
    return out


def run(config: RunConfig | RunPlan, progress: Progress | None = None,
        write: bool = True, overwrite: bool = False) -> RunResult:
    """Run one attack end to end; with ``write`` the outputs go to ``config.out``.

    Args:
        config: a config (resolved here) or a plan :func:`ggl.plan.resolve` made of one.
        overwrite: replace a run already in ``config.out`` (else that is an error).

    Raises:
        GGLError: for anything the user can fix (names, files, shapes, budgets, devices).
    """
    started = time.perf_counter()
    plan = config if isinstance(config, RunPlan) else resolve(config)
    config, attack = plan.config, plan.attack
    out = output_folder(config, overwrite) if write else None
    keep_freed_memory()
    # model-internal draws (PRECODE's bottleneck, dropout) use torch's global generator
    torch.manual_seed(config.seed)
    lpips_metric = LPIPS(config.lpips_weights) if config.lpips_weights else None
    scenario, data = prepare(plan)
    observation, secret = scenario.observe()
    federation = scenario.federation
    del scenario                    # from here on only the Observation and the metrics remain
    control = {"kind": "none"}
    if plan.control is not None:                  # the attack gets the control's update
        observation, control = plan.control(observation, config.seed)
    if getattr(attack, "uses_secret_masks", False):     # an oracle baseline (wiig), labelled
        attack.secret_masks = secret.dropout_masks      # as such in its run.json
    reconstruction = attack.reconstruct(observation, progress)
    record = run_record(plan, observation, reconstruction, secret, data,
                        started=started, control=control, federation=federation,
                        lpips_metric=lpips_metric)
    if write:
        write_run(out, record, reconstruction, secret, data)
    return RunResult(record, reconstruction, observation, secret, out)


def run_record(plan: RunPlan, observation: Observation, reconstruction: Reconstruction,
               secret: Secret | None, data: ImageData, *, started: float,
               control: dict | None = None, federation: dict | None = None,
               lpips_metric: LPIPS | None = None) -> dict:
    """run.json's record of one attack; without a ``secret`` (a real deployment's update,
    ``ggl.flower``) nothing is scored and ``metrics`` is None."""
    config, attack, device = plan.config, plan.attack, plan.device
    scoring_started = time.perf_counter()
    scores = None
    if secret is not None:
        if lpips_metric is not None:
            lpips_metric.net.to(device)
        scores = honest_score(observation, reconstruction, secret, data, device, lpips_metric)
    return {
        "config": config.to_dict(),
        "defenses": plan.defense_records(),
        "control": control or {"kind": "none"},
        "attack_options": asdict(attack.options),
        "private_indices": None if secret is None else list(secret.indices),
        "true_labels": None if secret is None else secret.labels.tolist(),
        "recovered_labels": (reconstruction.labels if scores is None else
                             reconstruction.labels[torch.as_tensor(scores.matching)]).tolist(),
        "metrics": None if scores is None else asdict(scores),
        "loss": reconstruction.loss,
        "evaluations": reconstruction.evaluations,
        "iterations": reconstruction.iterations,
        "attack_wall_time_s": reconstruction.wall_time,
        "attack_cpu_time_s": reconstruction.cpu_time,
        "scoring_wall_time_s": time.perf_counter() - scoring_started,
        "total_wall_time_s": time.perf_counter() - started,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "info": reconstruction.info,
        "federation": federation,
        "server": observation.server_sent or {"threat_model": "honest-but-curious"},
        "server_local_training": None if observation.weight_update is None else {
            **asdict(observation.weight_update.training),
            "estimated": list(observation.weight_update.estimated)},
        "loss_history": downsample(reconstruction.history),
        "versions": library_versions(),
    }


def write_run(out: Path, record: dict, reconstruction: Reconstruction, secret: Secret | None,
              data: ImageData) -> None:
    """The run's files in ``out``: the images (originals beside the matched reconstruction
    where a secret exists) and run.json, written last (atomically)."""
    matching = record["metrics"]["matching"] if record["metrics"] else \
        list(range(len(reconstruction.images)))
    order = torch.as_tensor(matching, device=reconstruction.images.device)
    frames = [(i, images[torch.as_tensor(matching)]) for i, images in reconstruction.snapshots]
    record["files"] = save_images(out, None if secret is None else secret.images,
                                  reconstruction.images[order], frames, data.mean, data.std)
    record["files"].append("run.json")
    atomic_write_json(out / "run.json", record)


#: the metrics a control is compared on: "leak over control" = attack - control
LEAK_METRICS = ("psnr", "ssim", "judge_accuracy", "identifiability")


def leak_over_control(metrics: dict, control_metrics: dict) -> dict:
    """``metric -> attack - control`` for ``LEAK_METRICS`` (None where either is None)."""
    return {key: None if metrics.get(key) is None or control_metrics.get(key) is None
            else metrics[key] - control_metrics[key] for key in LEAK_METRICS}


def run_with_control(config: RunConfig | RunPlan, control: str = "random-gradient",
                     progress: Progress | None = None, control_progress: Progress | None = None,
                     write: bool = True, overwrite: bool = False
                     ) -> tuple[RunResult, RunResult]:
    """The attack on the real update, then the same run under ``control`` (each a run of
    its own, resolved once).

    With ``write``, the control goes to ``<out>/control/`` and the attack's ``run.json``
    gains ``control_comparison``: the control's metrics and the leak over control.

    Returns:
        ``(attack result, control result)``.
    """
    main_plan = config if isinstance(config, RunPlan) else resolve(config)
    config = main_plan.config
    if config.control != "none":
        raise GGLError("run_with_control runs the real update first: give a config with "
                       f"control 'none', not {config.control!r}")
    out = Path(config.out) if config.out else default_out(config)
    # both runs are resolved before either starts (an unknown control stops nothing midway)
    control_plan = resolve(replace(config, control=control, out=str(out / "control")))
    if write:
        output_folder(main_plan.config, overwrite)
        output_folder(control_plan.config, overwrite)
    main = run(replace(main_plan, config=replace(config, out=str(out))), progress, write=write,
               overwrite=overwrite)
    controlled = run(control_plan, control_progress, write=write, overwrite=overwrite)
    comparison = {"control": control, "run": "control/run.json",
                  "metrics": {key: controlled.record["metrics"].get(key)
                              for key in LEAK_METRICS + ("label_accuracy",)},
                  "leak_over_control": leak_over_control(main.record["metrics"],
                                                         controlled.record["metrics"])}
    main.record["control_comparison"] = comparison
    if write:
        atomic_write_json(out / "run.json", main.record)
    return main, controlled


def summary_lines(record: dict) -> list[str]:
    """What ``ggl run`` prints of a record: the attack's line, then (when it has one) its
    control's and the leak over control."""
    metrics = record["metrics"]
    config = record["config"]
    lpips = "n/a" if metrics["lpips"] is None else f"{metrics['lpips']:.3f}"
    found = _found_text(record)
    line = (f"{config['attack']} on {config['model']}/{config['dataset']} private "
            f"{record['private_indices']}: PSNR {metrics['psnr']:.2f} dB, SSIM "
            f"{metrics['ssim']:.3f}, LPIPS {lpips}; {found}; labels "
            f"{metrics['label_accuracy']:.0%}")
    if metrics.get("ceiling_psnr") is not None:
        gap = metrics["search_gap"]
        verdict = ("the search stopped short of a latent its objective prefers" if gap > 0
                   else "the objective prefers another image")
        line += (f"; prior ceiling {metrics['ceiling_psnr']:.1f} dB, search gap {gap:+.3g} "
                 f"({verdict})")
    line += f"; {record['evaluations']} evaluations, {record['attack_wall_time_s']:.1f} s"
    lines = [line]
    comparison = record.get("control_comparison")
    if comparison:
        control, leak = comparison["metrics"], comparison["leak_over_control"]
        judge = ("judge n/a" if control["judge_accuracy"] is None
                 else f"judge {control['judge_accuracy']:.0%}")
        leak_judge = "" if leak["judge_accuracy"] is None else \
            f", judge {leak['judge_accuracy'] * 100:+.0f} points"
        lines.append(f"{comparison['control']} control (the same attack given noise instead "
                     f"of the update): PSNR {control['psnr']:.2f} dB, {judge}, identifiable "
                     f"{control['identifiability']:.0%} -> leak over control: PSNR "
                     f"{leak['psnr']:+.2f} dB{leak_judge}, identifiability "
                     f"{leak['identifiability'] * 100:+.0f} points")
    return lines


def _found_text(record: dict) -> str:
    """``judge: 7, true 4 (not found)`` for one image, ``judge 60%`` for a batch."""
    metrics = record["metrics"]
    identifiable = f"identifiable {metrics['identifiability']:.0%} " \
                   f"({metrics['identifiability_space']} space)"
    if metrics["judge_accuracy"] is None:
        return f"judge n/a ({metrics['judge'].get('reason')}); {identifiable}"
    judged = metrics["per_image"]["judge_class"]
    if len(judged) == 1:
        verdict = "found" if metrics["judge_accuracy"] == 1 else "NOT found"
        return (f"judge sees a {judged[0]} (true {record['true_labels'][0]}): {verdict}; "
                f"{identifiable}")
    return f"judge {metrics['judge_accuracy']:.0%}; {identifiable}"
