"""BigGAN-deep (pytorch-pretrained-biggan) as a class-conditional GGL prior.

GGL's ImageNet prior: ``biggan-deep-256`` called as ``G(z, one_hot(label, 1000), truncation)``,
its 256x256 output area-resized to the victim's 224x224. ggl loads a local folder holding
``config.json`` and the weights (``pytorch_model.bin`` read with
``torch.load(weights_only=True)``, or ``model.safetensors``), and downloads one only when
asked (``download_biggan``). Nothing is unpickled.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ggl.errors import GGLError
from ggl.generators.prior import Prior
from ggl.weights import read_state_dict

#: model name -> (config URL, weights URL) of pytorch-pretrained-biggan's releases
_RELEASES = "https://s3.amazonaws.com/models.huggingface.co/biggan"
BIGGAN_MODELS = {name: (f"{_RELEASES}/{name}-config.json", f"{_RELEASES}/{name}-pytorch_model.bin")
                 for name in ("biggan-deep-128", "biggan-deep-256", "biggan-deep-512")}
#: truncation used when none is given (the value of pytorch-pretrained-biggan's example)
DEFAULT_TRUNCATION = 0.4
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class BigGANNet(nn.Module):
    """``BigGAN`` behind the generator call of ggl: ``(z (N, 128), labels (N,))`` -> images.

    Output ``(N, 3, R, R)`` in [-1, 1]; ``truncation`` is passed to BigGAN's conditional
    batch norms, as the latents are drawn with it.
    """

    def __init__(self, biggan: nn.Module, truncation: float):
        super().__init__()
        self.biggan, self.truncation = biggan, truncation

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        classes = F.one_hot(labels, self.biggan.config.num_classes).to(z.dtype)
        return self.biggan(z, classes, self.truncation)


def _missing_message(name: str, folder: Path) -> str:
    config_url, weights_url = BIGGAN_MODELS[name]
    return (f"{name}: {folder} must hold config.json and pytorch_model.bin (or "
            f"model.safetensors); nothing is downloaded unless you ask: fetch {config_url} "
            f"and {weights_url} into {folder} under those names, or call "
            f"ggl.generators.biggan.download_biggan('{name}', '{folder}')")


def load_biggan(name: str, folder: str | Path) -> nn.Module:
    """A ``BigGAN`` from a local folder, in eval mode, on the CPU."""
    from pytorch_pretrained_biggan import BigGAN, BigGANConfig

    if name not in BIGGAN_MODELS:
        raise GGLError(f"unknown BigGAN {name!r}; valid: {', '.join(BIGGAN_MODELS)}")
    folder = Path(folder)
    config_path = folder / "config.json"
    weights = next((folder / f for f in WEIGHT_FILES if (folder / f).is_file()), None)
    if not config_path.is_file() or weights is None:
        raise GGLError(_missing_message(name, folder))
    try:
        config = BigGANConfig.from_dict(json.loads(config_path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as err:
        raise GGLError(f"{config_path} is not a BigGAN config ({err})") from None
    model = BigGAN(config)
    state = read_state_dict(weights, f"{name} weights")
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys:
        raise GGLError(f"{weights} does not match {config_path}: "
                       f"{len(result.missing_keys)} missing tensors, e.g. "
                       f"{result.missing_keys[0]}")
    return model.eval()


def download_biggan(name: str, folder: str | Path) -> Path:
    """Fetch a pretrained BigGAN-deep (config + weights) into ``folder``; the user asks for it."""
    import urllib.request

    if name not in BIGGAN_MODELS:
        raise GGLError(f"unknown BigGAN {name!r}; valid: {', '.join(BIGGAN_MODELS)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for url, target in zip(BIGGAN_MODELS[name], ("config.json", "pytorch_model.bin")):
        partial = folder / (target + ".part")
        try:
            urllib.request.urlretrieve(url, partial)
        except OSError as err:
            raise GGLError(f"could not download {url} ({err}); "
                           f"{_missing_message(name, folder)}") from None
        partial.replace(folder / target)
    return folder


@torch.no_grad()
def initialise_random(model: nn.Module, passes: int = 10, seed: int = 0) -> nn.Module:
    """Make a randomly initialised ``BigGAN`` usable (tests, timing): without this its eval
    output is NaN, because spectral norm's vectors were never iterated and the last batch
    norm's scale is left uninitialised. Fills that scale with 1 (bias 0) and runs ``passes``
    forward passes in train mode, then returns the model in eval mode."""
    model.generator.bn.weight.fill_(1.0)        # the final, unconditional batch norm
    model.generator.bn.bias.zero_()
    rng = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(passes):
        z = torch.randn(2, model.config.z_dim, generator=rng)
        classes = F.one_hot(torch.randint(model.config.num_classes, (2,), generator=rng),
                            model.config.num_classes).float()
        model(z, classes, 1.0)
    return model.eval()


def prior_from_biggan(biggan: nn.Module, name: str, truncation: float = DEFAULT_TRUNCATION):
    """Wrap a loaded ``BigGAN`` as a class-conditional :class:`ggl.generators.prior.Prior`."""
    if not 0 < truncation <= 1:
        raise GGLError(f"BigGAN truncation must be in (0, 1], got {truncation}")
    return Prior(BigGANNet(biggan, truncation), name=name, latent_dim=biggan.config.z_dim,
                 num_classes=biggan.config.num_classes, channels=3,
                 resolution=biggan.config.output_dim, truncation=truncation)


def biggan_prior(name: str, folder: str | Path, truncation: float = DEFAULT_TRUNCATION):
    """The ``--generator biggan-deep-N:DIR`` prior."""
    return prior_from_biggan(load_biggan(name, folder), f"{name}:{folder}", truncation)
