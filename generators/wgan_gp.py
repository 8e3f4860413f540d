"""The DCGAN-style WGAN-GP generator of GGL, and its checkpoint format.

Architecture (GGL's CelebA prior at ``width=128``, ``resolution=32``)::

    z (latent_dim) -> Linear -> (c0, 4, 4) + BN + ReLU
                   -> [ConvTranspose(k=2, s=2) + BN + ReLU] x (log2(resolution / 4) - 1)
                   -> ConvTranspose(k=2, s=2) -> tanh          # (channels, resolution, resolution)

with ``c0 = width * 2**(n_up - 1)`` channels halving at every up-sampling, ``n_up =
log2(resolution / 4)``. The output lies in ``[-1, 1]``: the data's normalized space when the
data are normalized with mean = std = 0.5 (ggl's convention).

A class-conditional variant (``num_classes`` set) appends a learned class embedding (of
``latent_dim`` entries) to ``z`` before the first layer, so one network draws any class on
demand and the attack still searches ``z`` alone. (Multiplying ``z`` by the embedding, the
first design, let the label steer only 31% of samples after 5000 steps; see
experiments/README.md, "A conditional prior".)

Checkpoints are two files side by side: ``NAME.safetensors`` (tensors only) and
``NAME.json`` (the :class:`WGANConfig` and training facts). Nothing is unpickled.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ggl.errors import GGLError
from ggl.generators.folded import FoldedLayers, state_key

ARCHITECTURE = "wgan-gp"
#: resolutions the architecture can make: 4 * 2**n_up with at least two up-samplings
RESOLUTIONS = (16, 32, 64, 128)


@dataclass(frozen=True)
class WGANConfig:
    """What it takes to rebuild a WGAN-GP generator (and its critic).

    Attributes:
        channels: output channels (1 grayscale, 3 RGB).
        resolution: output height = width; one of ``RESOLUTIONS``.
        latent_dim: size of ``z`` (GGL: 128).
        width: channels of the last hidden layer; the first has ``width * 2**(n_up-1)``.
        num_classes: ``None`` for an unconditional generator, else the number of classes.
    """

    channels: int = 1
    resolution: int = 32
    latent_dim: int = 128
    width: int = 64
    num_classes: int | None = None

    def __post_init__(self):
        if self.resolution not in RESOLUTIONS:
            raise GGLError(f"the wgan-gp architecture cannot make {self.resolution}x"
                           f"{self.resolution} images; accepted resolutions: "
                           f"{', '.join(map(str, RESOLUTIONS))} (use --resolution)")
        for name, most in (("channels", 4), ("latent_dim", 65_536), ("width", 8_192)):
            if not 1 <= getattr(self, name) <= most:
                raise GGLError(f"wgan-gp {name} must be in 1..{most}, got {getattr(self, name)}")
        if self.num_classes is not None and not 2 <= self.num_classes <= 100_000:
            raise GGLError(f"a conditional wgan-gp needs 2..100000 classes, got "
                           f"{self.num_classes}")

    @property
    def upsamplings(self) -> int:
        return int(math.log2(self.resolution // 4))

    @property
    def conditional(self) -> bool:
        return self.num_classes is not None

    def to_dict(self) -> dict:
        return {"architecture": ARCHITECTURE, **asdict(self)}

    @classmethod
    def from_dict(cls, record, source: str = "generator config") -> "WGANConfig":
        """The config of a ``generator.json`` (its ``generator`` object), every field
        checked against this dataclass's types (:mod:`ggl.options`) and ranges."""
        from ggl.options import check_value, option_specs

        if not isinstance(record, dict):
            raise GGLError(f"{source}: the generator config must be a JSON object, got "
                           f"{type(record).__name__}")
        if record.get("architecture") != ARCHITECTURE:
            raise GGLError(f"{source}: checkpoint architecture is "
                           f"{record.get('architecture')!r}, expected {ARCHITECTURE!r}")
        specs = option_specs(cls)
        return cls(**{k: check_value(specs[k], v, f"{source}: {k}")
                      for k, v in record.items() if k in specs})


class WGANGenerator(nn.Module):
    """DCGAN generator: ``z (N, latent_dim)`` [+ ``labels (N,)``] -> images ``(N, C, R, R)`` in [-1, 1]."""

    def __init__(self, config: WGANConfig):
        super().__init__()
        self.config = config
        channels = config.width * 2 ** (config.upsamplings - 1)
        self.embedding = (nn.Embedding(config.num_classes, config.latent_dim)
                          if config.conditional else None)
        inputs = config.latent_dim * (2 if config.conditional else 1)
        self.project = nn.Sequential(nn.Linear(inputs, channels * 16),
                                     nn.BatchNorm1d(channels * 16), nn.ReLU(True))
        blocks = []
        for _ in range(config.upsamplings - 1):
            blocks += [nn.ConvTranspose2d(channels, channels // 2, 2, stride=2),
                       nn.BatchNorm2d(channels // 2), nn.ReLU(True)]
            channels //= 2
        blocks += [nn.ConvTranspose2d(channels, config.channels, 2, stride=2), nn.Tanh()]
        self.upsample = nn.Sequential(*blocks)
        self._first_channels = config.width * 2 ** (config.upsamplings - 1)
        self._folded: tuple[tuple, FoldedLayers] | None = None
        self._dcgan_init()

    def _dcgan_init(self) -> None:
        """DCGAN's initialization (Radford et al. 2016): weights N(0, 0.02), BN scales N(1, 0.02).

        PyTorch's default for ConvTranspose2d computes fan-in from the OUTPUT channels, so
        the last layer (fan-in 1 * 2 * 2) starts with weights up to +-0.5 and every pixel
        saturates the tanh; at lr 1e-4 Adam needs thousands of steps to undo that.
        """
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.ConvTranspose2d)):
                nn.init.normal_(module.weight, 0.0, 0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.training or any(p.requires_grad for p in self.parameters()):
            return self.upsample(self.first_features(z, labels))
        return self.folded()(self._inputs(z, labels))       # a frozen prior: same function

    def folded(self) -> FoldedLayers:
        """This generator's layers folded for inference (:mod:`ggl.generators.folded`),
        rebuilt when a parameter or buffer has changed since the last call."""
        key = state_key(self)
        if self._folded is None or self._folded[0] != key:
            self._folded = (key, FoldedLayers(self.project, self.upsample,
                                              self._first_channels))
        return self._folded[1]

    def _inputs(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """``z (N, latent_dim)`` [+ the embedding of ``labels (N,)``]: the first layer's input."""
        if self.embedding is None:
            return z
        if labels is None:
            raise GGLError("this wgan-gp generator is class-conditional: give labels")
        return torch.cat([z, self.embedding(labels)], dim=1)

    def first_features(self, z: torch.Tensor, labels: torch.Tensor | None = None
                       ) -> torch.Tensor:
        """``z (N, latent_dim)`` [+ ``labels (N,)``] -> the first feature map ``(N, c0, 4, 4)``."""
        return self.project(self._inputs(z, labels)).view(len(z), self._first_channels, 4, 4)

    def layer_chain(self) -> list:
        """The generator as a chain of layers, for searches in its feature spaces (GIFD):
        ``chain[0](z, labels)`` is :meth:`first_features`, each later entry maps one feature
        map to the next (an up-sampling block: ConvTranspose + BN + ReLU) and the last one to
        the image (ConvTranspose + tanh). Composing the chain is ``forward``."""
        modules = list(self.upsample)
        blocks = [nn.Sequential(*modules[i:i + 3]) for i in range(0, len(modules) - 2, 3)]
        return [self.first_features, *blocks, nn.Sequential(*modules[-2:])]


def checkpoint_paths(stem: str | Path) -> tuple[Path, Path]:
    """``(weights .safetensors, config .json)`` of a checkpoint given either file or the stem."""
    stem = Path(stem)
    if stem.suffix in (".safetensors", ".json"):
        stem = stem.with_suffix("")
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def read_json(path: Path, what: str) -> dict:
    """A JSON file as a dict, or one clear error when it is missing or unreadable."""
    if not path.is_file():
        raise GGLError(f"{what}: {path} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise GGLError(f"{what}: {path} is corrupt or truncated ({err}); "
                       f"restore it or start from another checkpoint") from None


def read_tensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file (on the CPU), or one clear error."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise GGLError(f"{what}: {path} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise GGLError(f"{what}: {path} is corrupt or truncated ({err}); "
                       f"restore it or start from another checkpoint") from None


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> WGANGenerator:
    """A generator from a checkpoint written by ``ggl train-prior``, in ``eval()`` mode.

    Args:
        path: ``DIR`` holding ``generator.safetensors`` + ``generator.json``, or either file,
            or their common stem.
    """
    given = Path(path)
    weights_path, config_path = checkpoint_paths(given / "generator" if given.is_dir() else given)
    if not given.exists() and not config_path.exists():
        raise GGLError(f"{given} does not exist: give a `ggl train-prior --out` folder "
                       f"(generator.safetensors + generator.json) or one of its two files")
    record = read_json(config_path, "wgan-gp generator config")
    config = WGANConfig.from_dict(record.get("generator", record) if isinstance(record, dict)
                                  else record, str(config_path))
    generator = WGANGenerator(config)
    state = read_tensors(weights_path, "wgan-gp generator weights")
    try:
        generator.load_state_dict(state)
    except RuntimeError as err:
        raise GGLError(f"{weights_path} does not match its config {config} "
                       f"({str(err).splitlines()[0]})") from None
    return generator.to(device).eval()
