"""Victim networks: the models whose shared gradients the attacks invert.

All constructors take the same keywords: ``channels``, ``resolution``, ``num_classes``,
``width`` (``None`` = the model's default) and ``dropout`` (a rate; 0 = no dropout layers
active; where each model puts them is in its docstring). ``build_victim`` adds seeded
initialization, train/eval mode, an optional weights file and a check that the model fits
the data.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ggl.dropout import MaskedDropout, check_rate
from ggl.errors import GGLError
from ggl.registry import Registry
from ggl.weights import read_state_dict


class LeNet(nn.Module):
    """The LeNet of DLG (Zhu et al. 2019): three 5x5 convs with sigmoid, one linear layer.

    Input ``(B, channels, R, R)`` with R divisible by 4; output logits ``(B, num_classes)``.
    Weights and biases are drawn from U(-0.5, 0.5), as in DLG: sigmoid networks with this
    init keep gradients informative, which is what makes them the classic victim.
    ``dropout``: on the flattened features before the head.
    """

    def __init__(self, channels=3, resolution=32, num_classes=10, width=None, dropout=0.0):
        super().__init__()
        width = width or 12
        if resolution % 4:
            raise GGLError(f"lenet needs a resolution divisible by 4, got {resolution}")
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, kernel_size=5, padding=2, stride=2), nn.Sigmoid(),
            nn.Conv2d(width, width, kernel_size=5, padding=2, stride=2), nn.Sigmoid(),
            nn.Conv2d(width, width, kernel_size=5, padding=2, stride=1), nn.Sigmoid(),
        )
        self.dropout = MaskedDropout(dropout)
        self.fc = nn.Linear(width * (resolution // 4) ** 2, num_classes)
        for p in self.parameters():
            nn.init.uniform_(p, -0.5, 0.5)

    def forward(self, x):
        return self.fc(self.dropout(self.body(x).flatten(1)))


class ConvNet(nn.Module):
    """The ConvNet of Inverting Gradients: eight 3x3 conv-BN-ReLU layers, three 2x2 pools.

    Channels grow width -> 2w -> 4w; input ``(B, channels, R, R)`` with R divisible by 8.
    ``dropout``: on the flattened features before the head.
    """

    def __init__(self, channels=3, resolution=32, num_classes=10, width=None, dropout=0.0):
        super().__init__()
        w = width or 32
        if resolution % 8:
            raise GGLError(f"convnet needs a resolution divisible by 8, got {resolution}")
        plan = [(channels, w), (w, 2 * w), (2 * w, 2 * w), (2 * w, 4 * w), "pool",
                (4 * w, 4 * w), (4 * w, 4 * w), "pool", (4 * w, 4 * w), (4 * w, 4 * w), "pool"]
        layers: list[nn.Module] = []
        for step in plan:
            if step == "pool":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(*step, kernel_size=3, padding=1),
                           nn.BatchNorm2d(step[1]), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.dropout = MaskedDropout(dropout)
        self.fc = nn.Linear(4 * w * (resolution // 8) ** 2, num_classes)

    def forward(self, x):
        return self.fc(self.dropout(self.body(x).flatten(1)))


class MLP(nn.Module):
    """Two hidden ReLU layers of ``width`` units (default 512) on the flattened image.
    ``dropout``: after each hidden layer's ReLU."""

    def __init__(self, channels=3, resolution=32, num_classes=10, width=None, dropout=0.0):
        super().__init__()
        w = width or 512
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(channels * resolution ** 2, w),
                                  nn.ReLU(), MaskedDropout(dropout), nn.Linear(w, w), nn.ReLU(),
                                  MaskedDropout(dropout))
        self.fc = nn.Linear(w, num_classes)

    def forward(self, x):
        return self.fc(self.body(x))


class ConvFC(nn.Module):
    """A small conv net with a wide hidden layer: the Cocktail Party Attack's conv victim.

    Its first linear layer has ``width`` rows, so ICA can unmix batches of up to ``width``
    feature vectors.

    Two blocks of 3x3 conv (16, then 32 channels) - ReLU - 2x2 max-pool take
    ``(B, channels, R, R)`` (R divisible by 4) to ``(B, 32, R/4, R/4)``, flattened to
    ``32 R^2 / 16`` features (2,048 at 32 px); then ``Linear(features, width)`` - ReLU
    (``width`` default 256) and the head ``Linear(width, num_classes)``.
    ``dropout``: after the hidden layer's ReLU.
    """

    def __init__(self, channels=3, resolution=32, num_classes=10, width=None, dropout=0.0):
        super().__init__()
        w = width or 256
        if resolution % 4:
            raise GGLError(f"convfc needs a resolution divisible by 4, got {resolution}")
        self.body = nn.Sequential(
            nn.Conv2d(channels, 16, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * (resolution // 4) ** 2, w), nn.ReLU(),
            MaskedDropout(dropout))
        self.fc = nn.Linear(w, num_classes)

    def forward(self, x):
        return self.fc(self.body(x))


def resnet18(channels=3, resolution=32, num_classes=10, width=None, dropout=0.0) -> nn.Module:
    """torchvision's ResNet-18 (``width`` = channels of the first stage, default 64).

    Below 128 px the stem is CIFAR-style (3x3 conv, stride 1, no max-pool) so that small
    images keep spatial detail; from 128 px on it is torchvision's (7x7 stride 2 + pool).
    ``dropout`` > 0: on the pooled features before the head (``fc`` becomes
    ``Sequential(dropout, linear)``, so its weights are then ``fc.1.*``).
    """
    from torchvision.models import resnet18 as tv_resnet18
    from torchvision.models.resnet import BasicBlock, ResNet

    w = width or 64
    if w == 64:
        model = tv_resnet18(weights=None, num_classes=num_classes)
    else:
        model = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
        # torchvision fixes the widths at 64..512; rebuild the stages for other widths
        model.inplanes = w
        model.conv1 = nn.Conv2d(channels, w, 7, 2, 3, bias=False)
        model.bn1 = nn.BatchNorm2d(w)
        model.layer1 = model._make_layer(BasicBlock, w, 2)
        model.layer2 = model._make_layer(BasicBlock, 2 * w, 2, stride=2)
        model.layer3 = model._make_layer(BasicBlock, 4 * w, 2, stride=2)
        model.layer4 = model._make_layer(BasicBlock, 8 * w, 2, stride=2)
        model.fc = nn.Linear(8 * w, num_classes)
    if resolution < 128:
        model.conv1 = nn.Conv2d(channels, w, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif channels != 3:
        model.conv1 = nn.Conv2d(channels, w, kernel_size=7, stride=2, padding=3, bias=False)
    if dropout > 0:
        model.fc = nn.Sequential(MaskedDropout(dropout), model.fc)
    return model


class _Attention(nn.Module):
    """Multi-head self-attention on ``(B, N, D)`` tokens, dropout on the attention weights
    ``(B, heads, N, N)`` and on the output projection."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attention_dropout = MaskedDropout(dropout)
        self.proj = nn.Linear(dim, dim)
        self.proj_dropout = MaskedDropout(dropout)

    def forward(self, x):
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.heads, dim // self.heads) \
            .permute(2, 0, 3, 1, 4)                       # each (B, heads, N, D / heads)
        weights = (q @ k.transpose(-2, -1) / (dim // self.heads) ** 0.5).softmax(-1)
        out = (self.attention_dropout(weights) @ v).transpose(1, 2).reshape(batch, tokens, dim)
        return self.proj_dropout(self.proj(out))


class _Block(nn.Module):
    """Pre-norm transformer block: attention, then a GELU MLP (hidden 2D) with dropout."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = _Attention(dim, heads, dropout)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), MaskedDropout(dropout),
                                 nn.Linear(2 * dim, dim), MaskedDropout(dropout))

    def forward(self, x):
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """A small Vision Transformer for small images (the Dropout Inversion Attack's victim).

    The image ``(B, channels, R, R)`` is cut into an 8 x 8 grid of patches (4 px at 32 px;
    R divisible by 8), embedded to ``width`` (default 64) dimensions with a class token
    and learned positions, then 4 pre-norm blocks of 4 heads; the head reads the class
    token. ``dropout``: on the attention weights, the attention output and in each MLP.
    The original's ViT is the same design at width 256 with 16 heads and an MLP of 256
    (and dropout on the embeddings); width 64 keeps an attack within a CPU's budget.
    """

    def __init__(self, channels=3, resolution=32, num_classes=10, width=None, dropout=0.0):
        super().__init__()
        dim = width or 64
        if resolution % 8:
            raise GGLError(f"vit needs a resolution divisible by 8, got {resolution}")
        if dim % 4:
            raise GGLError(f"vit needs a width divisible by its 4 heads, got {dim}")
        patch = resolution // 8
        self.embed = nn.Conv2d(channels, dim, kernel_size=patch, stride=patch)
        # N(0, 1) class token and positions, as the original's ViT (lucidrains'): with
        # timm's 0.02 an untrained ViT is nearly invariant to permuting the patches, so its
        # gradient cannot say where a patch goes (IG then scatters patches, ~7 dB)
        self.class_token = nn.Parameter(torch.randn(1, 1, dim))
        self.positions = nn.Parameter(torch.randn(1, 65, dim))
        self.blocks = nn.Sequential(*[_Block(dim, 4, dropout) for _ in range(4)])
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)            # (B, 64, D)
        tokens = torch.cat([self.class_token.expand(len(x), -1, -1), tokens], dim=1)
        tokens = self.blocks(tokens + self.positions)
        return self.fc(self.norm(tokens[:, 0]))


#: name -> constructor(channels, resolution, num_classes, width) -> nn.Module
MODELS: Registry[Callable[..., nn.Module]] = Registry.of("model", {
    "lenet": LeNet,
    "convnet": ConvNet,
    "resnet18": resnet18,
    "mlp": MLP,
    "vit": ViT,
    "convfc": ConvFC,
})


def build_victim(name: str, channels: int, resolution: int, num_classes: int, *,
                 seed: int = 0, width: int | None = None, mode: str = "eval",
                 weights: str | Path | None = None, dropout: float = 0.0) -> nn.Module:
    """Build a victim model with a seeded init, on the CPU, in ``mode`` ("eval"/"train").

    ``dropout``: the rate of the model's dropout layers (``ggl.dropout.MaskedDropout``); the
    client turns them on for its gradient whatever ``mode`` is.

    Args:
        weights: optional ``.safetensors`` file or a state dict saved with ``torch.save``
            (loaded with ``weights_only=True``: nothing is unpickled).
    Raises:
        GGLError: unknown name or mode, a weights file that is missing, corrupt or of
            another architecture, or a model that cannot take ``(channels, R, R)`` input.
    """
    constructor = MODELS.choose(name)
    if mode not in ("eval", "train"):
        raise GGLError(f"model mode must be 'eval' or 'train', got {mode!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = constructor(channels=channels, resolution=resolution,
                            num_classes=num_classes, width=width,
                            dropout=check_rate(dropout))
    if weights is not None:
        load_weights(model, weights, name)
    check_fits(model, name, (channels, resolution, resolution), num_classes)
    return model.train(mode == "train")


def load_weights(model: nn.Module, path: str | Path, name: str = "model") -> None:
    """Load a state dict from ``.safetensors`` or a ``torch.save`` file, safely."""
    state = read_state_dict(path, "weights file")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        first = str(err).strip().splitlines()[0]
        raise GGLError(f"weights file {path} does not fit the {name} victim built for this "
                       f"dataset: {first}") from None


def check_fits(model: nn.Module, name: str, shape: tuple[int, int, int], num_classes: int):
    """Run one dummy forward; raise a GGLError if ``(1, *shape)`` input does not work."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, *shape))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise GGLError(f"model {name!r} cannot take input of shape {tuple(shape)}: "
                       f"{first}") from None
    finally:
        model.train(was_training)
    if out.shape != (1, num_classes):
        raise GGLError(f"model {name!r} returns shape {tuple(out.shape[1:])} but the dataset "
                       f"has {num_classes} classes")


def last_linear(model: nn.Module) -> nn.Linear:
    """The classifier head: the last ``nn.Linear`` of the model (its input is the feature r)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise GGLError("the victim has no linear classifier layer")
    return linears[-1]


def train_victim(model: nn.Module, public, steps: int, *, seed: int = 0, batch_size: int = 64,
                 lr: float = 0.01, device: torch.device | str = "cpu") -> list[float]:
    """Train ``model`` in place for ``steps`` SGD steps (momentum 0.9) on the public split.

    The model's train/eval mode is restored afterwards. Returns the loss of each step.
    """
    if steps <= 0:
        return []
    from torch.utils.data import DataLoader, RandomSampler

    generator = torch.Generator().manual_seed(seed)
    sampler = RandomSampler(public, replacement=True, num_samples=steps * batch_size,
                            generator=generator)
    loader = DataLoader(public, batch_size=batch_size, sampler=sampler)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    was_training = model.training
    model.train()
    losses = []
    for images, labels in loader:
        loss = F.cross_entropy(model(images.to(device)), labels.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.train(was_training)
    return losses
