"""Prior quality without Inception weights: a small classifier trained on the public split.

FID needs Inception weights, which are not available offline. Instead a small CNN is trained
on the same public split the prior saw, and the prior's samples are scored by it:

- ``confidence``: mean top-class softmax probability of the samples (recognisable samples
  are classified confidently);
- ``class_shares``: the fraction of samples assigned to each class, its minimum
  (``min_class_share``) and its normalized entropy ``coverage`` (1 = perfectly even, 0 =
  one class only), which exposes mode collapse;
- ``scorer_private_accuracy`` and ``real_confidence``: the classifier's accuracy and mean
  top-class confidence on (up to 2000 images of) the held-out private split, so a reader
  can judge the judge: real digits are the ceiling a prior's ``confidence`` can reach.

For a conditional prior, ``conditional_accuracy`` is how often the classifier agrees with
the class the sample was drawn for.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ggl.judge import (ScoringClassifier, stack_split as _stack,  # noqa: F401 (re-exported)
                       train_scoring_classifier, unavailable_reason)


@torch.no_grad()
def sample_statistics(probabilities: torch.Tensor) -> dict:
    """Confidence and class coverage of classifier ``probabilities (N, K)`` of N samples."""
    num_classes = probabilities.shape[1]
    shares = torch.bincount(probabilities.argmax(1), minlength=num_classes).double()
    shares = shares / shares.sum()
    nonzero = shares[shares > 0]
    entropy = -(nonzero * nonzero.log()).sum().item()
    return {
        "confidence": probabilities.max(1).values.mean().item(),
        "class_shares": [round(s, 4) for s in shares.tolist()],
        "min_class_share": shares.min().item(),
        "coverage": entropy / math.log(num_classes),
    }


@torch.no_grad()
def score_prior(generator, data, samples: int = 2000, seed: int = 0, device="cpu",
                classifier: ScoringClassifier | None = None) -> dict:
    """Score a prior's ``eval()``-mode samples with the public-split classifier.

    Returns a JSON-ready dict; ``{"available": False, "reason": ...}`` when the dataset's
    labels cannot support the score.
    """
    reason = unavailable_reason(data)
    if reason is not None:
        return {"available": False, "reason": reason}
    scorer_facts = {"scorer_private_accuracy": None, "real_confidence": None}
    if classifier is None:
        with torch.enable_grad():
            classifier, scorer_facts = train_scoring_classifier(data, seed=seed, device=device)
    generator = generator.to(device).eval()
    latent_generator = torch.Generator().manual_seed(seed + 12345)
    latent_dim = generator.config.latent_dim
    latents = torch.randn(samples, latent_dim, generator=latent_generator)
    wanted = torch.arange(samples) % data.num_classes if generator.config.conditional else None
    probabilities = []
    for start in range(0, samples, 500):
        labels = None if wanted is None else wanted[start:start + 500].to(device)
        images = generator(latents[start:start + 500].to(device), labels)
        probabilities.append(F.softmax(classifier(images), dim=1).cpu())
    probabilities = torch.cat(probabilities)
    result = {"available": True, "samples": samples, "scorer": "ScoringClassifier",
              **scorer_facts, **sample_statistics(probabilities)}
    if wanted is not None:
        result["conditional_accuracy"] = (probabilities.argmax(1) == wanted).float().mean().item()
    return result


def score_saved_prior(path, dataset: str = "mnist", samples: int = 2000, seed: int = 0,
                      device="cpu", data_root=None) -> dict:
    """Load a ``ggl train-prior`` generator (``None``: the shipped prior of ``dataset``) and
    score it with :func:`score_prior` on ``dataset``'s public split.

    The result also names the generator (``"generator"``) and the step it was saved at.
    Raises GGLError when the generator cannot draw images of the dataset's shape.
    """
    from ggl.data import load_dataset
    from ggl.errors import GGLError
    from ggl.generators import default_prior
    from ggl.generators.wgan_gp import checkpoint_paths, load_generator, read_json

    if samples < 1:
        raise GGLError(f"--samples must be at least 1, got {samples}")
    path = default_prior(dataset) if path is None else Path(path)
    generator = load_generator(path, device=device)
    record = read_json(checkpoint_paths(path / "generator" if path.is_dir() else path)[1],
                       "wgan-gp generator config")
    config = generator.config
    data = load_dataset(dataset, root=data_root, resolution=config.resolution)
    if config.channels != data.channels:
        raise GGLError(f"the generator draws {config.channels}-channel images but {dataset} "
                       f"has {data.channels} channels: score it on the dataset it was trained on")
    if config.conditional and config.num_classes != data.num_classes:
        raise GGLError(f"the generator is conditional on {config.num_classes} classes but "
                       f"{dataset} has {data.num_classes}: score it on the dataset it was "
                       f"trained on")
    quality = score_prior(generator, data, samples=samples, seed=seed, device=device)
    return {"generator": str(path), "trained_on": record.get("dataset"),
            "step": record.get("step"), **quality}


def quality_lines(quality: dict) -> list[str]:
    """The human-readable summary of a :func:`score_prior` result, one string per line."""
    if not quality.get("available"):
        return [f"prior quality unavailable: {quality['reason']}"]
    lines = [f"prior quality: confidence {quality['confidence']:.3f} (real private images: "
             f"{quality['real_confidence']:.3f}), smallest class share "
             f"{quality['min_class_share']:.1%}, coverage {quality['coverage']:.3f} [scorer: "
             f"classifier trained on the public split, private accuracy "
             f"{quality['scorer_private_accuracy']:.1%}]"]
    if "without_ema" in quality:
        lines.append(f"without the moving average (the trained generator itself): confidence "
                     f"{quality['without_ema']['confidence']:.3f}, smallest class share "
                     f"{quality['without_ema']['min_class_share']:.1%}")
    if "conditional_accuracy" in quality:
        lines.append(f"conditional prior: {quality['conditional_accuracy']:.1%} of samples are "
                     f"classified as the class they were drawn for")
    return lines


def wasserstein_estimate(generator, data, critic_steps: int = 200, batch_size: int = 64,
                         gp_weight: float = 10.0, critic_width: int = 32, lr: float = 1e-3,
                         seed: int = 0, device="cpu") -> float:
    """Wasserstein-1 estimate between the public split and a FROZEN generator's samples.

    A fresh critic (the training critic's architecture at ``critic_width``, same seed every
    call) is trained for ``critic_steps`` WGAN-GP steps (Adam ``lr``, betas (0.5, 0.9))
    against the frozen generator; the estimate is
    ``mean D(real) - mean D(fake)`` on 512 held-out draws. Lower = samples closer to the data.
    Comparable between generators only at equal ``critic_steps`` and ``seed``.
    """
    from ggl.gan_training.critic import Critic, gradient_penalty

    generator = generator.to(device).eval()
    images, labels = _stack(data.public)
    images, labels = images.to(device), labels.to(device)
    rng = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    from dataclasses import replace

    critic = Critic(replace(generator.config, width=critic_width)).to(device)
    optimizer = torch.optim.Adam(critic.parameters(), lr=lr, betas=(0.5, 0.9))
    conditional = generator.config.conditional

    def draw(size):
        index = torch.randint(len(labels), (size,), generator=rng).to(device)
        real, real_labels = images[index], labels[index]
        fake_labels = real_labels if conditional else None
        with torch.no_grad():
            latents = torch.randn(size, generator.config.latent_dim, generator=rng).to(device)
            fake = generator(latents, fake_labels)
        return real, fake, fake_labels

    for _ in range(critic_steps):
        real, fake, cls = draw(batch_size)
        epsilon = torch.rand(batch_size, generator=rng).to(device)
        with torch.enable_grad():
            loss = (critic(fake, cls).mean() - critic(real, cls).mean()
                    + gp_weight * gradient_penalty(critic, real, fake, epsilon, cls))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    real, fake, cls = draw(512)
    return (critic(real, cls).mean() - critic(fake, cls).mean()).item()
