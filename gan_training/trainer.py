"""WGAN-GP training of a ggl prior on the PUBLIC split of a registered dataset.

One generator step = ``n_critic`` critic steps (loss ``D(fake) - D(real) + lambda * GP``)
followed by one generator step (loss ``-D(G(z))``), Adam for both — the settings of GGL's
prior (Gulrajani et al. 2017): lambda 10, n_critic 5, Adam 1e-4 betas (0.5, 0.999), batch 64.
A conditional prior adds the auxiliary-classifier terms of AC-WGAN-GP (Odena et al. 2017;
Gulrajani et al. 2017, section 6): ``class_weight * CE(critic's class head(real), label)`` to
the critic's loss and ``class_weight * CE(class head(G(z, label)), label)`` to the
generator's, so the label decides the class drawn.

With ``ema > 0`` an exponential moving average of the generator's weights and BatchNorm
statistics (``torch.optim.swa_utils.AveragedModel``; Yazici et al. 2019) is kept beside the
trained generator. It does not change training; it is the prior that is saved, sampled and
scored. GGL trained without it, so it is off by default.

Every random draw (real-batch indices, latents, interpolation weights) comes from one seeded
CPU ``torch.Generator`` whose state is saved in each checkpoint, so ``resume`` continues the
same sequence of batches a run that was never stopped would have seen.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ggl import checks, constants
from ggl.errors import GGLError
from ggl.gan_training.checkpoint import (GENERATOR_FILE, read_training_record,
                                         read_training_state, restore_training_state,
                                         save_generator, save_training_state)
from ggl.gan_training.critic import Critic, gradient_penalty
from ggl.generators.wgan_gp import RESOLUTIONS, WGANConfig, WGANGenerator
from ggl.results import atomic_write_json, remove_stale_temporaries

CHECKPOINT = "checkpoint.safetensors"
#: written into an output folder before anything else, with the run's settings: the run
#: that wrote it may start again there (a kill during its first checkpoint leaves its
#: folder to it)
STARTED = ".train-prior-started"
#: public splits smaller than this many bytes are kept as one tensor on the device
IN_MEMORY_BYTES = 2 * 1024 ** 3


@dataclass
class TrainPriorConfig:
    """Everything ``ggl train-prior`` takes. ``steps`` counts GENERATOR steps."""

    dataset: str = "mnist"
    out: str = "results/prior"
    steps: int = 5000
    batch_size: int = 64
    n_critic: int = 5
    gp_weight: float = 10.0
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    latent_dim: int = 128
    width: int = 64
    conditional: bool = False
    resolution: int | None = None
    data_root: str | None = None
    download: bool = False
    checkpoint_every: int = 500
    checkpoint_minutes: float = 5.0
    samples: int = 64
    seed: int = constants.DEFAULT_SEED
    device: str = "auto"
    ema: float = 0.0
    class_weight: float = 1.0

    def validate(self) -> "TrainPriorConfig":
        for name in ("steps", "batch_size", "n_critic", "checkpoint_every", "samples",
                     "latent_dim", "width"):
            checks.at_least(f"--{name.replace('_', '-')}", getattr(self, name), 1)
        checks.positive("--lr", self.lr)
        checks.positive("--checkpoint-minutes", self.checkpoint_minutes)
        checks.at_least("--gp-weight", self.gp_weight, 0)
        checks.at_least("--class-weight", self.class_weight, 0)
        checks.seed("--seed", self.seed)
        checks.writable_folder(self.out, "--out")
        if not 0.0 <= self.ema < 1.0:
            raise GGLError(f"--ema is the moving average's decay: 0 (off) or in (0, 1), "
                           f"e.g. 0.999; got {self.ema}")
        if self.resolution is not None and self.resolution not in RESOLUTIONS:
            WGANConfig(resolution=self.resolution)  # raises the architecture's own message
        self.betas = tuple(self.betas)
        return self

    def architecture_fields(self) -> dict:
        """What a checkpoint must agree on to be resumed with this config."""
        return {k: getattr(self, k) for k in ("dataset", "batch_size", "n_critic", "gp_weight",
                                              "lr", "latent_dim", "width", "conditional",
                                              "resolution", "seed", "ema", "class_weight")}

    def to_dict(self) -> dict:
        record = asdict(self)
        record["betas"] = list(self.betas)
        return record

    @classmethod
    def resumed(cls, out: str | Path, given: dict) -> "TrainPriorConfig":
        """The config a ``--resume`` of ``out`` runs with: the settings its run was started
        with, overridden by the options the user ``given`` now (a changed architecture
        setting is still refused when the trainer compares them to the checkpoint)."""
        saved = saved_settings(Path(out))
        known = {f.name for f in fields(cls)} - set(NOT_RESUMED)
        settings = {k: v for k, v in saved.items() if k in known}
        if "betas" in settings:
            settings["betas"] = tuple(settings["betas"])
        return cls(**{**settings, **given, "out": str(out)})


#: settings a resume takes from the command line, never from the checkpoint
NOT_RESUMED = ("out", "device")


def saved_settings(out: Path) -> dict:
    """The config a run in ``out`` was started with: from its checkpoint, else from the
    marker a run killed during its first checkpoint left; ``{}`` when neither holds one."""
    checkpoint = out / CHECKPOINT
    if checkpoint.exists():
        return read_training_record(checkpoint)["config"]
    try:
        marker = json.loads((out / STARTED).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    config = marker.get("config") if isinstance(marker, dict) else None
    return config if isinstance(config, dict) else {}


@dataclass
class TrainingHistory:
    """Per generator step: the critic's last loss terms and the generator's loss."""

    wasserstein: list[float] = field(default_factory=list)   # mean D(real) - mean D(fake)
    gradient_penalty: list[float] = field(default_factory=list)
    critic_loss: list[float] = field(default_factory=list)
    generator_loss: list[float] = field(default_factory=list)


class _PublicBatches:
    """Random batches ``(images (B, C, R, R), labels (B,))`` of the public split, with replacement."""

    def __init__(self, dataset, device: torch.device):
        self.dataset, self.device = dataset, device
        if len(dataset) == 0:
            raise GGLError("the dataset's public split is empty: a prior needs public images")
        image, _ = dataset[0]
        self.images = self.labels = None
        if len(dataset) * image.numel() * 4 <= IN_MEMORY_BYTES:
            images = getattr(dataset, "images", None)
            labels = getattr(dataset, "labels", None)
            if images is None:
                items = [dataset[i] for i in range(len(dataset))]
                images = torch.stack([img for img, _ in items])
                labels = torch.tensor([int(lbl) for _, lbl in items])
            self.images, self.labels = images.to(device), torch.as_tensor(labels).to(device)

    def sample(self, size: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.randint(len(self.dataset), (size,), generator=rng)
        if self.images is not None:
            index = index.to(self.device)
            return self.images[index], self.labels[index]
        items = [self.dataset[int(i)] for i in index]
        return (torch.stack([img for img, _ in items]).to(self.device),
                torch.tensor([int(lbl) for _, lbl in items], device=self.device))


def _check_resumable(saved: dict, config: TrainPriorConfig, path: Path) -> None:
    # checkpoints written before a setting existed ran with its default
    theirs = {**TrainPriorConfig().architecture_fields(), **saved["config"]}
    mine = config.architecture_fields()
    differing = {k: (theirs.get(k), v) for k, v in mine.items()
                 if k != "resolution" and theirs.get(k) != v}
    if config.resolution is not None and theirs.get("resolution") != config.resolution:
        differing["resolution"] = (theirs.get("resolution"), config.resolution)
    if differing:
        listed = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in differing.items())
        raise GGLError(f"--resume: {path} was trained with other settings ({listed}); resume "
                       f"with the checkpoint's settings or train into another --out")


class PriorTrainer:
    """Train (or resume) a WGAN-GP prior; see :func:`train_prior` for the one-call version."""

    def __init__(self, config: TrainPriorConfig, resume: bool = False, data=None):
        """Args:
            config: the run's settings (validated here).
            resume: continue the checkpoint in ``config.out`` instead of refusing to touch it.
            data: an :class:`ggl.data.ImageData` to train on instead of ``config.dataset``
                (for your own data from Python; its ``public`` split is used).
        """
        from ggl.config import resolve_device
        from ggl.data import load_dataset

        self.config = config.validate()
        self.out = Path(config.out)
        self.checkpoint_path = self.out / CHECKPOINT
        saved = None
        if resume:                       # a run killed while writing left these behind
            remove_stale_temporaries(self.out)
        if self.checkpoint_path.exists():
            if not resume:
                raise GGLError(f"{self.out} already holds a training checkpoint; pass --resume "
                               f"to continue it, or choose another --out (nothing was overwritten)")
            saved, tensors = read_training_state(self.checkpoint_path)
            _check_resumable(saved, config, self.checkpoint_path)
            config.resolution = saved["config"]["resolution"]
        elif (self.out / STARTED).exists():
            pass        # a run of ours stopped before its first checkpoint: start it again
        elif resume:
            raise GGLError(f"--resume: {self.out} holds no {CHECKPOINT} to continue; "
                           f"leave out --resume to start a new run there")
        elif (self.out / GENERATOR_FILE).exists():
            raise GGLError(f"{self.out} already holds a prior ({GENERATOR_FILE}) and no "
                           f"checkpoint of a run to continue: choose another --out (nothing "
                           f"was overwritten)")

        self.device = resolve_device(config.device)
        self.data = data if data is not None else load_dataset(
            config.dataset, root=config.data_root, download=config.download,
            resolution=config.resolution)
        config.resolution = self.data.resolution
        self.architecture = WGANConfig(
            channels=self.data.channels, resolution=self.data.resolution,
            latent_dim=config.latent_dim, width=config.width,
            num_classes=self.data.num_classes if config.conditional else None)
        self.batches = _PublicBatches(self.data.public, self.device)

        torch.manual_seed(config.seed)  # network initialization
        self.generator = WGANGenerator(self.architecture).to(self.device)
        self.critic = Critic(self.architecture).to(self.device)
        self.optimizers = {
            "generator": torch.optim.Adam(self.generator.parameters(), config.lr, betas=config.betas),
            "critic": torch.optim.Adam(self.critic.parameters(), config.lr, betas=config.betas)}
        self.averaged = None
        if config.ema > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.averaged = AveragedModel(self.generator, use_buffers=True,
                                          multi_avg_fn=get_ema_multi_avg_fn(config.ema))
        self.rng = torch.Generator().manual_seed(config.seed)
        self.fixed_latents = torch.randn(config.samples, config.latent_dim,
                                         generator=torch.Generator().manual_seed(config.seed + 1))
        self.fixed_labels = torch.arange(config.samples) % self.data.num_classes
        self.history = TrainingHistory()
        self.step = 0
        self.train_seconds = 0.0
        if saved is not None:
            restore_training_state(tensors, self.generator, self.critic, self.optimizers,
                                   self.rng, self.averaged)
            self.step = saved["step"]
            self.history = TrainingHistory(**saved["history"])
            self.train_seconds = saved.get("train_seconds", 0.0)
        self.resumed_at = (self.step, self.train_seconds)   # for this run's own speed

    # --- one step ---------------------------------------------------------------------------
    def _latents(self, size: int) -> torch.Tensor:
        return torch.randn(size, self.config.latent_dim, generator=self.rng).to(self.device)

    def _fake_labels(self, real_labels: torch.Tensor) -> torch.Tensor | None:
        return real_labels if self.architecture.conditional else None

    def train_step(self) -> dict[str, float]:
        """``n_critic`` critic updates then one generator update; returns the step's losses."""
        cfg, generator, critic = self.config, self.generator, self.critic
        generator.train()
        critic.train()
        for _ in range(cfg.n_critic):
            real, labels = self.batches.sample(cfg.batch_size, self.rng)
            labels = self._fake_labels(labels)
            with torch.no_grad():
                fake = generator(self._latents(cfg.batch_size), labels)
            epsilon = torch.rand(cfg.batch_size, generator=self.rng).to(self.device)
            real_scores, real_logits = critic.score_and_classify(real, labels)
            wasserstein = real_scores.mean() - critic(fake, labels).mean()
            penalty = gradient_penalty(critic, real, fake, epsilon, labels)
            critic_loss = -wasserstein + cfg.gp_weight * penalty
            if real_logits is not None:
                critic_loss = critic_loss + cfg.class_weight * F.cross_entropy(real_logits, labels)
            self.optimizers["critic"].zero_grad(set_to_none=True)
            critic_loss.backward()
            self.optimizers["critic"].step()

        _, labels = self.batches.sample(cfg.batch_size, self.rng)
        labels = self._fake_labels(labels)
        fake_scores, fake_logits = critic.score_and_classify(
            generator(self._latents(cfg.batch_size), labels), labels)
        generator_loss = -fake_scores.mean()
        if fake_logits is not None:
            generator_loss = generator_loss + cfg.class_weight * F.cross_entropy(fake_logits, labels)
        self.optimizers["generator"].zero_grad(set_to_none=True)
        generator_loss.backward()
        self.optimizers["generator"].step()
        if self.averaged is not None:
            self.averaged.update_parameters(self.generator)
        self.step += 1
        losses = {"wasserstein": wasserstein.item(), "gradient_penalty": penalty.item(),
                  "critic_loss": critic_loss.item(), "generator_loss": generator_loss.item()}
        for key, value in losses.items():
            getattr(self.history, key).append(value)
        return losses

    # --- outputs ----------------------------------------------------------------------------
    @property
    def prior(self) -> WGANGenerator:
        """The generator that is saved as the prior: the moving average when ``ema > 0``."""
        return self.averaged.module if self.averaged is not None else self.generator

    @torch.no_grad()
    def samples(self) -> torch.Tensor:
        """The fixed-latent sample grid's images ``(samples, C, R, R)`` in [-1, 1], eval mode."""
        prior = self.prior.eval()
        labels = self.fixed_labels.to(self.device) if self.architecture.conditional else None
        return prior(self.fixed_latents.to(self.device), labels).cpu()

    def record(self) -> dict:
        """The JSON record of the current state (also embedded in the safetensors files)."""
        from ggl.results import library_versions

        return {
            "generator": self.architecture.to_dict(),
            "dataset": self.config.dataset,
            "split": "public",
            "public_size": len(self.data.public),
            "num_classes": self.data.num_classes,
            "normalization": {"mean": list(self.data.mean), "std": list(self.data.std)},
            "resolution": self.data.resolution,
            "channels": self.data.channels,
            "step": self.step,
            "seed": self.config.seed,
            "config": self.config.to_dict(),
            "train_seconds": self.train_seconds,
            "history": asdict(self.history),
            "versions": library_versions(),
        }

    def save_checkpoint(self, quality: dict | None = None) -> dict:
        """Write the training checkpoint, the usable prior, the sample grid and loss plot."""
        from ggl.gan_training.plots import save_loss_plot, save_sample_grid

        record = self.record()
        if quality is not None:
            record["quality"] = quality
        self.out.mkdir(parents=True, exist_ok=True)
        # this folder is ours from the first write on; the marker keeps the settings for
        # a --resume of a run killed during this first checkpoint
        atomic_write_json(self.out / STARTED, {"config": self.config.to_dict()})
        # the step's artifacts first, the checkpoint that declares the step done last: a
        # kill in between repeats the step's artifacts on resume, none goes missing
        prior_record = {k: v for k, v in record.items() if k != "history"}
        save_generator(self.out, self.prior, prior_record)
        samples, mean, std = self.samples(), self.data.mean, self.data.std
        save_sample_grid(samples, self.out / "samples" / f"step_{self.step:07d}.png", mean, std)
        save_sample_grid(samples, self.out / "samples.png", mean, std)
        save_loss_plot(self.history, self.out / "losses.png")
        save_training_state(self.checkpoint_path, record, self.generator, self.critic,
                            self.optimizers, self.rng, self.averaged)
        return record

    # --- the loop ---------------------------------------------------------------------------
    def train(self, progress: Callable[[int, int, dict], None] | None = None,
              should_stop: Callable[[], bool] = lambda: False) -> bool:
        """Train until ``config.steps`` generator steps; returns False if stopped early.

        Checkpoints every ``checkpoint_every`` steps or ``checkpoint_minutes`` of training,
        whichever comes first, at the end, and when ``should_stop()`` turns true (the step
        in progress is finished first, so nothing is lost). Checkpoints draw no random
        numbers, so when they happen does not change the trained prior.
        """
        cfg = self.config
        last_saved = time.monotonic()
        while self.step < cfg.steps:
            started = time.perf_counter()
            losses = self.train_step()
            self.train_seconds += time.perf_counter() - started
            if progress is not None:
                progress(self.step, cfg.steps, losses)
            stopping = should_stop()
            if (self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps or stopping
                    or time.monotonic() - last_saved >= cfg.checkpoint_minutes * 60):
                self.save_checkpoint()
                last_saved = time.monotonic()
            if stopping:
                return False
        if not self.checkpoint_path.exists():  # resumed a finished run: still leave outputs
            self.save_checkpoint()
        return True

    def this_run(self) -> dict:
        """The steps trained since this trainer started (not since the first run) and
        their seconds per step."""
        steps = self.step - self.resumed_at[0]
        seconds = self.train_seconds - self.resumed_at[1]
        return {"steps": steps, "seconds_per_step": seconds / steps if steps else None}


def train_prior(config: TrainPriorConfig, resume: bool = False, score: bool = True,
                progress=None, should_stop=lambda: False) -> dict:
    """Train a prior, score it (when the dataset allows) and return the final record."""
    from ggl.gan_training.quality import score_prior, train_scoring_classifier, unavailable_reason

    trainer = PriorTrainer(config, resume=resume)
    finished = trainer.train(progress, should_stop)
    record = trainer.record()
    if finished and score:
        quality = score_prior(trainer.prior, trainer.data, seed=config.seed, device=trainer.device)
        if trainer.averaged is not None and unavailable_reason(trainer.data) is None:
            # the trained generator too, by the same scorer, so the average's effect is on record
            classifier, facts = train_scoring_classifier(trainer.data, seed=config.seed,
                                                         device=trainer.device)
            quality["without_ema"] = {**score_prior(trainer.generator, trainer.data,
                                                    seed=config.seed, device=trainer.device,
                                                    classifier=classifier), **facts}
        record = trainer.save_checkpoint(quality=quality)
    record["finished"] = finished
    record["this_run"] = trainer.this_run()
    return record

