"""The judge: an independent classifier that says whether a reconstruction shows the client's
image, and the feature space identifiability is measured in.

PSNR alone misleads: a clean image of the wrong digit can score higher than a noisy image of
the right one, and the label an attack reports is read from the gradient, not from its image.
The judge is a small CNN (:class:`ScoringClassifier`: two conv blocks and two linear layers,
an architecture none of the victims has), trained on the dataset's PUBLIC split only, never
on a private image. It is the classifier ``ggl train-prior`` scores priors with.

Where a judge comes from (:func:`load_judge`):

* the offline MNIST judge ships with ggl (``ggl/weights/judge-mnist``: safetensors + JSON);
* for every other dataset it is trained once on first use and cached in
  ``constants.CACHE_DIR / "judges" / "<dataset>-<C>x<R>px"``. A judge folder is used only
  when its JSON names the same dataset, split, channels, resolution and classes, the
  fingerprint of the data matches (so a changed dataset folder is noticed), and the weights'
  SHA-256 matches the JSON (a truncated or corrupt file is noticed). Otherwise it is refused,
  the reason is kept in the judge's facts, and the judge is rebuilt: never a silently wrong one.
* a dataset with too many classes for a small classifier (CelebA's identities) or too few
  public images per class has no judge: :func:`load_judge` returns ``None`` with the reason
  (judge accuracy is then reported as unavailable; identifiability falls back to pixels).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ggl import constants
from ggl.errors import GGLError

#: quality is only computed for label sets a small classifier can learn
MAX_CLASSES = 100
MIN_PUBLIC_PER_CLASS = 20
#: the judges ggl ships: dataset -> folder holding judge.safetensors + judge.json
SHIPPED_JUDGES = {"mnist": Path(__file__).resolve().parent / "weights" / "judge-mnist"}
#: bump when the training recipe or the file layout changes: older caches are rebuilt
JUDGE_FORMAT = 1
#: the judge's recipe: 20 epochs, random shifts of up to 2 pixels, one-cycle step size
#: (offline MNIST: 97.4% on the private split, against 96.7% for the prior scorer's 8
#: epochs without them)
JUDGE_EPOCHS = 20
JUDGE_SHIFT = 2
JUDGE_SEED = 0
#: at most this many private images are scored for the judge's own accuracy and form the
#: identifiability gallery
GALLERY_LIMIT = 10_000
#: images of each split hashed into a dataset's fingerprint
FINGERPRINT_IMAGES = 32


class ScoringClassifier(nn.Module):
    """Two conv blocks and two linear layers: ``(N, C, R, R)`` -> logits ``(N, num_classes)``."""

    def __init__(self, channels: int, resolution: int, num_classes: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * (resolution // 4) ** 2, 128), nn.ReLU(),
            nn.Linear(128, num_classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The 128 penultimate activations ``(N, 128)``: the judge's feature space."""
        return self.net[:-1](images)


def stack_split(dataset, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(N, C, H, W)`` and labels ``(N,)`` of (the first ``limit`` items of) a split."""
    images = getattr(dataset, "images", None)
    if images is not None:
        return images[:limit], torch.as_tensor(dataset.labels)[:limit]
    count = len(dataset) if limit is None else min(limit, len(dataset))
    items = [dataset[i] for i in range(count)]
    return (torch.stack([img for img, _ in items]),
            torch.tensor([int(lbl) for _, lbl in items]))


def unavailable_reason(data) -> str | None:
    """Why no classifier can be trained on this dataset's labels, or None when it can."""
    if data.num_classes > MAX_CLASSES:
        return (f"{data.name} has {data.num_classes} classes (e.g. identities); a judge "
                f"needs <= {MAX_CLASSES} classes")
    if len(data.public) < MIN_PUBLIC_PER_CLASS * data.num_classes:
        return (f"the public split has {len(data.public)} images, fewer than "
                f"{MIN_PUBLIC_PER_CLASS} per class: too few to train a judge")
    return None


def random_shift(images: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Each image ``(N, C, H, W)`` moved by up to ``pixels`` in x and y, filled with the
    darkest value (-1 in the normalized space)."""
    n, _, height, width = images.shape
    padded = F.pad(images, (pixels,) * 4, value=-1.0)
    dy, dx = (torch.randint(0, 2 * pixels + 1, (2, n), generator=generator)
              .to(images.device))
    rows = dy[:, None] + torch.arange(height, device=images.device)[None]
    cols = dx[:, None] + torch.arange(width, device=images.device)[None]
    batch = torch.arange(n, device=images.device)[:, None, None]
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def train_scoring_classifier(data, seed: int = 0, epochs: int = 8, device="cpu",
                             max_images: int = 50_000, accuracy_images: int = 2000,
                             shift: int = 0) -> tuple[ScoringClassifier, dict]:
    """Train the classifier on (at most ``max_images`` of) the PUBLIC split only: Adam
    1e-3, batches of 128; with ``shift`` > 0 the images move randomly by up to ``shift``
    pixels and the step size follows a one-cycle schedule (peak 3e-3).

    Returns ``(classifier in eval mode, facts)``: ``scorer_private_accuracy`` and
    ``real_confidence`` measured on up to ``accuracy_images`` private (held-out) images, and
    ``public_images_used``, the number of public images it was trained on (the first ones).
    """
    images, labels = stack_split(data.public, max_images)
    images, labels = images.to(device), labels.to(device)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    classifier = ScoringClassifier(data.channels, data.resolution, data.num_classes).to(device)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-3)
    schedule = None
    if shift:
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, 3e-3, total_steps=epochs * math.ceil(len(labels) / 128))
    classifier.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(labels), generator=generator).split(128):
            batch = batch.to(device)
            inputs = random_shift(images[batch], shift, generator) if shift else images[batch]
            loss = F.cross_entropy(classifier(inputs), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
    classifier.eval()
    private_images, private_labels = stack_split(data.private, accuracy_images)
    with torch.no_grad():
        probabilities = F.softmax(classifier(private_images.to(device)), dim=1).cpu()
    return classifier, {
        "scorer_private_accuracy": (probabilities.argmax(1) == private_labels).float().mean().item(),
        "real_confidence": probabilities.max(1).values.mean().item(),
        "public_images_used": len(labels)}


@dataclass
class Judge:
    """A trained judge and what is known of it.

    Attributes:
        net: the classifier (eval mode), taking images in the dataset's normalized space.
        facts: JSON-ready: ``dataset``, ``split`` (``"public"``), ``channels``,
            ``resolution``, ``num_classes``, ``private_accuracy`` (on up to
            ``GALLERY_LIMIT`` private images), ``public_images_used``, ``source``
            (``shipped``, ``cached`` or ``trained``) and ``refused`` (folders not used, why).
    """

    net: ScoringClassifier
    facts: dict
    _gallery: dict = field(default_factory=dict, repr=False)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Classes ``(N,)`` of normalized images ``(N, C, H, W)``."""
        return self.net(images.to(self.device)).argmax(1)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Judge features ``(N, 128)`` of normalized images ``(N, C, H, W)``, on the CPU."""
        return torch.cat([self.net.features(chunk.to(self.device)).cpu()
                          for chunk in images.split(1000)])


def fingerprint(data) -> str:
    """SHA-256 of a dataset's name, split sizes, shape, classes and its first images and
    labels of each split: changes when the data a judge was trained for changes."""
    digest = hashlib.sha256()
    digest.update(json.dumps([data.name, len(data.public), len(data.private), data.channels,
                              data.resolution, data.num_classes]).encode())
    for split in (data.public, data.private):
        images, labels = stack_split(split, FINGERPRINT_IMAGES)
        digest.update(images.float().mul(1e4).round().to(torch.int64).numpy().tobytes())
        digest.update(labels.to(torch.int64).numpy().tobytes())
    return digest.hexdigest()


def _expected(data) -> dict:
    return {"format": JUDGE_FORMAT, "dataset": data.name, "split": "public",
            "channels": data.channels, "resolution": data.resolution,
            "num_classes": data.num_classes, "fingerprint": fingerprint(data)}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_judge(folder: Path, data, device="cpu") -> Judge:
    """The judge in ``folder`` if it was trained for ``data``.

    Raises:
        GGLError: the folder is missing, its JSON or weights are unreadable, corrupt or
            truncated, or it was trained for another dataset, split, shape or data.
    """
    from safetensors.torch import load_file

    meta_path, weights_path = folder / "judge.json", folder / "judge.safetensors"
    if not meta_path.is_file() or not weights_path.is_file():
        raise GGLError(f"no judge in {folder}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        raise GGLError(f"{meta_path} is not a readable judge record ({err})") from None
    expected = _expected(data)
    for key, value in expected.items():
        if meta.get(key) != value:
            raise GGLError(f"{folder} holds a judge for {key} {meta.get(key)!r}, not "
                           f"{value!r}")
    if meta.get("sha256") != _sha256(weights_path):
        raise GGLError(f"{weights_path} does not match the SHA-256 in its judge.json "
                       f"(corrupt or truncated)")
    net = ScoringClassifier(data.channels, data.resolution, data.num_classes)
    try:
        net.load_state_dict(load_file(str(weights_path)), strict=True)
    except Exception as err:                    # noqa: BLE001 -- any unreadable file
        raise GGLError(f"{weights_path} is not a judge state dict ({err})") from None
    facts = {key: meta[key] for key in ("dataset", "split", "channels", "resolution",
                                        "num_classes", "private_accuracy",
                                        "public_images_used") if key in meta}
    return Judge(net.to(device).eval(), facts)


def train_judge(data, device="cpu") -> Judge:
    """Train a judge on ``data``'s public split (``JUDGE_EPOCHS`` epochs, seed
    ``JUDGE_SEED``) and measure it on up to ``GALLERY_LIMIT`` private images."""
    with torch.enable_grad():
        net, scored = train_scoring_classifier(data, seed=JUDGE_SEED, epochs=JUDGE_EPOCHS,
                                               device=device, shift=JUDGE_SHIFT,
                                               accuracy_images=GALLERY_LIMIT)
    facts = {"dataset": data.name, "split": "public", "channels": data.channels,
             "resolution": data.resolution, "num_classes": data.num_classes,
             "private_accuracy": scored["scorer_private_accuracy"],
             "public_images_used": scored["public_images_used"]}
    return Judge(net, facts)


def save_judge(judge: Judge, folder: Path, data) -> None:
    """Write ``judge.safetensors`` and ``judge.json`` (with the weights' SHA-256) atomically."""
    from safetensors.torch import save

    from ggl.results import atomic_write_bytes, atomic_write_json

    weights = save({k: v.detach().cpu().contiguous() for k, v in judge.net.state_dict().items()})
    atomic_write_bytes(folder / "judge.safetensors", weights)
    atomic_write_json(folder / "judge.json", {
        **_expected(data), **{k: v for k, v in judge.facts.items()
                              if k not in ("source", "refused")},
        "epochs": JUDGE_EPOCHS, "shift": JUDGE_SHIFT, "seed": JUDGE_SEED,
        "architecture": "ScoringClassifier (ggl.judge)",
        "sha256": hashlib.sha256(weights).hexdigest()})


def cache_folder(data, cache_dir: Path | None = None) -> Path:
    return (Path(cache_dir or constants.CACHE_DIR) / "judges"
            / f"{data.name}-{data.channels}x{data.resolution}px")


_LOADED: dict[tuple, Judge] = {}


def load_judge(data, device="cpu", cache_dir: Path | None = None) -> tuple[Judge | None, str]:
    """The judge of ``data``: shipped, cached, or trained now and cached.

    Returns:
        ``(judge, note)``; ``(None, reason)`` when the dataset cannot have a judge.
    """
    reason = unavailable_reason(data)
    if reason is not None:
        return None, reason
    cache = cache_folder(data, cache_dir)
    key = (data.name, data.channels, data.resolution, str(device), str(cache))
    if key in _LOADED:
        return _LOADED[key], _LOADED[key].facts["source"]
    refused = []
    candidates = [("shipped", SHIPPED_JUDGES[data.name])] if data.name in SHIPPED_JUDGES else []
    candidates.append(("cached", cache))
    judge = None
    for source, folder in candidates:
        if not folder.exists():
            continue
        try:
            judge = read_judge(folder, data, device)
            judge.facts["source"] = source
            break
        except GGLError as err:
            refused.append(str(err))
    if judge is None:
        judge = train_judge(data, device)
        judge.facts["source"] = "trained"
        try:
            save_judge(judge, cache, data)
            judge.facts["cached_in"] = str(cache)
        except OSError as err:
            refused.append(f"not cached ({cache} is not writable: {err})")
    judge.facts["refused"] = refused
    _LOADED[key] = judge
    return judge, judge.facts["source"]


# --------------------------------------------------------------------------------------
# scores
# --------------------------------------------------------------------------------------
def gallery(judge: Judge, data, limit: int = GALLERY_LIMIT) -> tuple[torch.Tensor, torch.Tensor]:
    """Judge features ``(N, 128)`` and labels ``(N,)`` of the first ``N <= limit`` private
    images (computed once per judge)."""
    if limit not in judge._gallery:
        images, labels = stack_split(data.private, limit)
        judge._gallery[limit] = (judge.features(images), labels)
    return judge._gallery[limit]


def build_gallery(data, judge: Judge | None, indices, images: torch.Tensor):
    """The identifiability gallery of a private batch: the first ``GALLERY_LIMIT`` private
    images, plus the batch's own images where their index lies beyond (or is unknown).

    Args:
        indices: the batch's private indices (may be empty); images: ``(B, C, H, W)``.
    Returns:
        a ``ggl.metrics.Gallery``.
    """
    from ggl.metrics import Gallery

    limit = min(GALLERY_LIMIT, len(data.private))
    if judge is not None:
        features, _ = gallery(judge, data, limit)
    key = (data.name, data.channels, data.resolution, limit)
    if key not in _GALLERY_IMAGES:
        _GALLERY_IMAGES.clear()
        _GALLERY_IMAGES[key] = stack_split(data.private, limit)[0]
    gallery_images = _GALLERY_IMAGES[key]
    indices = list(indices) if len(indices) == len(images) else [None] * len(images)
    targets, extra = [], []
    for i, index in enumerate(indices):
        if index is not None and index < limit:
            targets.append(index)
        else:
            targets.append(limit + len(extra))
            extra.append(images[i].detach().cpu())
    if extra:
        added = torch.stack(extra)
        gallery_images = torch.cat([gallery_images, added])
        if judge is not None:
            features = torch.cat([features, judge.features(added)])
    return Gallery(gallery_images, torch.tensor(targets),
                   features if judge is not None else None)


_GALLERY_IMAGES: dict[tuple, torch.Tensor] = {}
