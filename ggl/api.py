"""Python API: build a ``RunConfig``, ``run`` it, get the record and the tensors back.

Example::

    from ggl import RunConfig, run
    result = run(RunConfig(attack="idlg", model="lenet", index=(3,), budget=50))
    print(result.record["metrics"]["psnr"])
    result.reconstruction.images      # (B, C, H, W), normalized
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import torch

import constants
from ggl.attacks.base import Progress, Reconstruction
from ggl.config import RunConfig, resolve_device
from ggl.data import ImageData, load_dataset
from ggl.defenses.base import Defense
from ggl.metrics import LPIPS, score
from ggl.models import build_victim, load_weights, train_victim
from ggl.results import atomic_write_json, downsample, library_versions, save_images
from ggl.scenario import Observation, Scenario, Secret, choose_indices

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


def prepare(config: RunConfig) -> tuple[Scenario, ImageData, torch.device]:
    """Load the data, build (and optionally train) the victim, pick the private batch."""
    device = resolve_device(config.device)
    data = load_dataset(config.dataset, config.data_root, config.download, config.resolution)
    defenses = config.build_defenses()
    # model extensions (PRECODE) are part of the global model: weights trained with one
    # belong to the wrapped model, so they are loaded after wrapping
    wrapping = [d.name for d in defenses if type(d).wrap_model is not Defense.wrap_model]
    model = build_victim(config.model, data.channels, data.resolution, data.num_classes,
                         seed=config.seed, width=config.width, mode=config.model_mode,
                         weights=None if wrapping else config.weights,
                         dropout=config.dropout).to(device)
    for defense in defenses:
        model = defense.wrap_model(model, seed=config.seed).to(device)
    if wrapping and config.weights:
        load_weights(model, config.weights, f"{config.model} + {' + '.join(wrapping)}")
    train_victim(model, data.public, config.victim_steps, seed=config.seed, device=device)
    indices = choose_indices(len(data.private), config.batch_size, config.index, config.seed)
    images, labels = data.private_batch(indices)
    public = torch.stack([data.public[i][0] for i in range(min(PUBLIC_SAMPLE, len(data.public)))])
    scenario = Scenario(model, images.to(device), labels.to(device),
                        num_classes=data.num_classes, mean=data.mean, std=data.std,
                        indices=indices, known_labels=config.known_labels,
                        public_images=public.to(device), domain=data.name,
                        defenses=defenses, seed=config.seed)
    return scenario, data, device


def default_out(config: RunConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return constants.OUTPUT_DIR / f"{config.attack}_{config.model}_{config.dataset}_{stamp}"


def run(config: RunConfig, progress: Progress | None = None, write: bool = True) -> RunResult:
    """Run one attack end to end; with ``write`` the outputs go to ``config.out``.

    Raises:
        GGLError: for anything the user can fix (names, files, shapes, budgets, devices).
    """
    started = time.perf_counter()
    config.validate()
    # model-internal draws (PRECODE's bottleneck, dropout) use torch's global generator
    torch.manual_seed(config.seed)
    attack = config.build_attack()
    lpips_metric = LPIPS(config.lpips_weights) if config.lpips_weights else None
    scenario, data, device = prepare(config)
    observation, secret = scenario.observe()
    del scenario                    # from here on only the Observation and the metrics remain
    if getattr(attack, "uses_secret_masks", False):     # an oracle baseline (wiig), labelled
        attack.secret_masks = secret.dropout_masks      # as such in its run.json
    reconstruction = attack.reconstruct(observation, progress)
    if lpips_metric is not None:
        lpips_metric.net.to(device)
    scores = score(observation.model, reconstruction.images, reconstruction.labels,
                   secret.images, secret.labels, data.mean, data.std, lpips_metric)
    record = {
        "config": config.to_dict(),
        "attack_options": asdict(attack.options),
        "private_indices": list(secret.indices),
        "true_labels": secret.labels.tolist(),
        "recovered_labels": reconstruction.labels[torch.as_tensor(scores.matching)].tolist(),
        "metrics": asdict(scores),
        "loss": reconstruction.loss,
        "evaluations": reconstruction.evaluations,
        "iterations": reconstruction.iterations,
        "attack_wall_time_s": reconstruction.wall_time,
        "total_wall_time_s": time.perf_counter() - started,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "info": reconstruction.info,
        "loss_history": downsample(reconstruction.history),
        "versions": library_versions(),
    }
    out = None
    if write:
        out = Path(config.out) if config.out else default_out(config)
        matched = reconstruction.images[torch.as_tensor(scores.matching, device=device)]
        frames = [(i, images[torch.as_tensor(scores.matching)])
                  for i, images in reconstruction.snapshots]
        record["files"] = save_images(out, secret.images, matched, frames, data.mean, data.std)
        record["files"].append("run.json")
        atomic_write_json(out / "run.json", record)
    return RunResult(record, reconstruction, observation, secret, out)
