"""Reconstruction quality: MSE, PSNR, SSIM, LPIPS (when weights exist), labels, features,
and whether the image was *found*: the judge's accuracy and identifiability.

Images are converted from the victim's normalized space to ``[0, 1]`` before any metric.
For B > 1 the reconstructions are first matched to the private images (Hungarian
assignment on MSE), since a gradient does not tell the order of its batch.

* ``judge_accuracy``: the share of reconstructions that an independent classifier trained on
  the public split only (``ggl.judge``) assigns to the private image's true class.
* ``identifiability`` (breaching's "image identifiability precision"): the share of
  reconstructions whose nearest neighbour among the private images (the gallery: the private
  split, up to ``ggl.judge.GALLERY_LIMIT`` images) is the true image, in the judge's feature
  space; in pixel space when the dataset has no judge; also in LPIPS space with its weights.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from ggl.errors import GGLError
from ggl.models import last_linear
from ggl.weights import read_state_dict


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
        with warnings.catch_warnings():          # torchvision's notes on its old arguments
            warnings.simplefilter("ignore")
            self.net = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
        backbone = self.net.net
        state = read_state_dict(path, "--lpips-weights")
        try:
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


def nearest_is_target(distances: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Whether each query's nearest gallery item is its target.

    Args:
        distances: ``(B, N)`` distances of B queries to N gallery items.
        targets: ``(B,)`` the position of each query's true item in the gallery.
    Returns:
        ``(B,)`` bool.
    """
    return distances.argmin(1).cpu() == targets.cpu()


@dataclass
class Gallery:
    """The private images identifiability searches among.

    Attributes:
        images: ``(N, C, H, W)`` normalized private images.
        targets: ``(B,)`` the position of each private image of the batch in ``images``.
        features: ``(N, D)`` the judge's features of ``images`` (None without a judge).
    """

    images: torch.Tensor
    targets: torch.Tensor
    features: torch.Tensor | None = None


def identifiability(recon01: torch.Tensor, matched: torch.Tensor, gallery: Gallery, mean,
                    std, judge=None, lpips_metric: LPIPS | None = None) -> dict:
    """Per feature space, whether each matched reconstruction's nearest private image is
    the true one: ``{"judge" | "pixels" | "lpips": [bool] * B}`` (judge and LPIPS spaces
    only when a judge / LPIPS weights are there). ``recon01`` and ``matched`` are the
    matched reconstructions in ``[0, 1]`` and clamped-normalized form."""
    gallery01 = to_unit_range(gallery.images, mean, std)
    found = {"pixels": nearest_is_target(
        torch.cdist(recon01.flatten(1).double().cpu(), gallery01.flatten(1).double().cpu()),
        gallery.targets)}
    if judge is not None and gallery.features is not None:
        found["judge"] = nearest_is_target(torch.cdist(judge.features(matched).double(),
                                                       gallery.features.double()),
                                           gallery.targets)
    if lpips_metric is not None:
        rows = []
        for query in recon01:
            rows.append(torch.cat([lpips_metric(query[None].expand(len(chunk), -1, -1, -1),
                                                chunk).cpu()
                                   for chunk in gallery01.split(256)]))
        found["lpips"] = nearest_is_target(torch.stack(rows), gallery.targets)
    return {space: values.tolist() for space, values in found.items()}


@dataclass
class Scores:
    """Metrics of one reconstruction; per-image lists are in the private batch's order.

    ``judge_accuracy`` is None (with the reason in ``judge``) when the dataset has no judge;
    ``judge_private_accuracy`` is the judge's own accuracy on the private split;
    ``identifiability`` is measured in ``identifiability_space`` (the judge's features, or
    pixels without a judge), every space's value in ``identifiability_by_space``. The
    ceiling and the search gap (latent attacks only, ``ggl.ceiling``) are None with
    ``ceiling_note`` saying why for other attacks.
    """

    mse: float
    psnr: float
    ssim: float
    label_accuracy: float
    feature_mse: float
    lpips: float | None
    lpips_note: str
    judge_accuracy: float | None = None
    judge_private_accuracy: float | None = None
    judge: dict = field(default_factory=dict)
    identifiability: float | None = None
    identifiability_space: str | None = None
    identifiability_by_space: dict = field(default_factory=dict)
    ceiling_psnr: float | None = None
    search_gap: float | None = None
    ceiling_note: str = ""
    search: dict = field(default_factory=dict)
    per_image: dict = field(default_factory=dict)
    matching: list[int] = field(default_factory=list)


def score(model: nn.Module, reconstruction: torch.Tensor, labels: torch.Tensor,
          original: torch.Tensor, true_labels: torch.Tensor, mean, std,
          lpips_metric: LPIPS | None = None, judge=None, judge_facts: dict | None = None,
          gallery: Gallery | None = None) -> Scores:
    """Score a reconstruction ``(B, C, H, W)`` against the private batch (both normalized).

    ``judge`` (a ``ggl.judge.Judge``, or None with the reason in ``judge_facts``) and
    ``gallery`` add judge accuracy and identifiability.
    """
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
    clamped = torch.max(torch.min(matched, high), low)
    scores = Scores(
        mse=per_mse.mean().item(), psnr=per_psnr.mean().item(), ssim=per_ssim.mean().item(),
        label_accuracy=label_accuracy(matched_labels, true_labels),
        feature_mse=feature_mse(model, clamped, original),
        lpips=lpips_value, lpips_note=note, per_image=per_image, matching=perm.tolist(),
        judge=dict(judge_facts or {}))
    if judge is not None:
        judged = judge.predict(clamped).cpu()
        correct = judged == true_labels.cpu()
        per_image["judge_class"], per_image["judge_correct"] = judged.tolist(), correct.tolist()
        scores.judge_accuracy = correct.float().mean().item()
        scores.judge_private_accuracy = judge.facts.get("private_accuracy")
    if gallery is not None:
        found = identifiability(recon01, clamped, gallery, mean, std, judge, lpips_metric)
        per_image.update({f"identified_{space}": values for space, values in found.items()})
        scores.identifiability_by_space = {space: sum(values) / len(values)
                                           for space, values in found.items()}
        scores.identifiability_space = "judge" if "judge" in found else "pixels"
        scores.identifiability = scores.identifiability_by_space[scores.identifiability_space]
    return scores
