"""Reconstruction quality: MSE, PSNR, SSIM, LPIPS (when weights exist), labels, features.

Images are converted from the victim's normalized space to ``[0, 1]`` before any metric.
For B > 1 the reconstructions are first matched to the private images (Hungarian
assignment on MSE), since a gradient does not tell the order of its batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ggl.errors import GGLError
from ggl.models import last_linear


def to_unit_range(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(B, C, H, W)`` normalized -> ``[0, 1]`` (clamped)."""
    mean_t = torch.tensor(mean, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    return (images * std_t + mean_t).clamp(0, 1)


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error of ``(B, C, H, W)`` tensors -> ``(B,)``."""
    return (x - y).pow(2).flatten(1).mean(1)


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of ``[0, 1]`` images ``(B, C, H, W)`` -> ``(B,)``."""
    return 10 * torch.log10(1.0 / mse(x, y).clamp_min(1e-10))


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (torchmetrics, Gaussian 11x11, sigma 1.5) of ``[0, 1]`` images -> ``(B,)``."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    return structural_similarity_index_measure(x.float(), y.float(), data_range=1.0,
                                               reduction="none")


def match(reconstruction: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Order of reconstructions that best matches the originals (Hungarian on MSE).

    Returns ``perm (B,)`` such that ``reconstruction[perm[i]]`` is matched to ``original[i]``.
    """
    from scipy.optimize import linear_sum_assignment

    cost = (reconstruction.unsqueeze(0) - original.unsqueeze(1)).pow(2).flatten(2).mean(2)
    rows, cols = linear_sum_assignment(cost.detach().cpu().numpy())
    return torch.as_tensor(cols[rows.argsort()], device=reconstruction.device)


def label_accuracy(predicted: torch.Tensor, true: torch.Tensor) -> float:
    """Fraction of positions where the labels agree (after matching)."""
    return (predicted.to(true.device) == true).float().mean().item()


def label_set_accuracy(predicted: torch.Tensor, true: torch.Tensor) -> float:
    """Order-free label accuracy: size of the multiset intersection over B."""
    p = torch.bincount(predicted.cpu(), minlength=int(max(predicted.max(), true.max())) + 1)
    t = torch.bincount(true.cpu(), minlength=len(p))
    return torch.minimum(p[: len(t)], t[: len(p)]).sum().item() / len(true)


@torch.no_grad()
def feature_mse(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """MSE between the classifier-head inputs (GGL's "MSE-R") of two normalized batches."""
    features = []
    hook = last_linear(model).register_forward_hook(lambda m, i, o: features.append(i[0]))
    was_training = model.training
    try:
        model.eval()
        model(x)
        model(y)
    finally:
        hook.remove()
        model.train(was_training)
    return (features[0] - features[1]).pow(2).mean().item()


class LPIPS:
    """LPIPS (AlexNet) with the backbone read from a local torchvision AlexNet state dict.

    The lpips package ships its linear heads but not the backbone; without the backbone the
    distance is meaningless, so ggl never computes it with random weights.

    Args:
        backbone_path: ``alexnet-owt-7be5be79.pth`` (torchvision) or a ``.safetensors`` copy.
    """

    def __init__(self, backbone_path: str | Path, device="cpu"):
        path = Path(backbone_path)
        if not path.is_file():
            raise GGLError(f"LPIPS backbone weights {path} not found: provide torchvision's "
                           f"AlexNet state dict (alexnet-owt-7be5be79.pth)")
        try:
            import lpips
        except ImportError:
            raise GGLError("LPIPS needs the lpips package: pip install 'ggl[lpips]'") from None
        # the linear heads ship with lpips; pnet_rand=True keeps it from downloading the
        # backbone, which is then filled from the user's file below
        self.net = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
        backbone = self.net.net
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file
                state = load_file(str(path))
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
            # lpips splits AlexNet's `features` into slices that keep the module indices
            mapped = {name: state["features." + name.split(".", 1)[1]]
                      for name, _ in backbone.named_parameters()}
            backbone.load_state_dict(mapped, strict=True)
        except Exception as err:
            raise GGLError(f"{path} is not a readable torchvision AlexNet state dict "
                           f"({type(err).__name__}: {err})") from None
        self.net = self.net.to(device).eval()

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-image LPIPS of ``[0, 1]`` images ``(B, C, H, W)`` -> ``(B,)``."""
        if x.shape[1] == 1:
            x, y = x.repeat(1, 3, 1, 1), y.repeat(1, 3, 1, 1)
        return self.net(x * 2 - 1, y * 2 - 1).flatten()


@dataclass
class Scores:
    """Metrics of one reconstruction; per-image lists are in the private batch's order."""

    mse: float
    psnr: float
    ssim: float
    label_accuracy: float
    feature_mse: float
    lpips: float | None
    lpips_note: str
    per_image: dict = field(default_factory=dict)
    matching: list[int] = field(default_factory=list)


def score(model: nn.Module, reconstruction: torch.Tensor, labels: torch.Tensor,
          original: torch.Tensor, true_labels: torch.Tensor, mean, std,
          lpips_metric: LPIPS | None = None) -> Scores:
    """Score a reconstruction ``(B, C, H, W)`` against the private batch (both normalized)."""
    recon01 = to_unit_range(reconstruction.detach(), mean, std)
    orig01 = to_unit_range(original.detach(), mean, std)
    perm = match(recon01, orig01)
    recon01, matched = recon01[perm], reconstruction.detach()[perm]
    matched_labels = labels[perm.to(labels.device)]
    per_mse, per_psnr, per_ssim = mse(recon01, orig01), psnr(recon01, orig01), ssim(recon01, orig01)
    lpips_value, note = None, "unavailable: no LPIPS backbone weights given (--lpips-weights)"
    per_image = {"mse": per_mse.tolist(), "psnr": per_psnr.tolist(), "ssim": per_ssim.tolist()}
    if lpips_metric is not None:
        per_lpips = lpips_metric(recon01, orig01)
        per_image["lpips"] = per_lpips.tolist()
        lpips_value, note = per_lpips.mean().item(), "AlexNet backbone"
    box = [(0 - m) / s for m, s in zip(mean, std)], [(1 - m) / s for m, s in zip(mean, std)]
    low = torch.tensor(box[0], device=matched.device).view(1, -1, 1, 1)
    high = torch.tensor(box[1], device=matched.device).view(1, -1, 1, 1)
    return Scores(
        mse=per_mse.mean().item(), psnr=per_psnr.mean().item(), ssim=per_ssim.mean().item(),
        label_accuracy=label_accuracy(matched_labels, true_labels),
        feature_mse=feature_mse(model, torch.max(torch.min(matched, high), low), original),
        lpips=lpips_value, lpips_note=note, per_image=per_image, matching=perm.tolist())
