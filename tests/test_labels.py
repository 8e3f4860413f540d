"""Label inference from the classifier head's gradient: iDLG (B = 1) and label counts (B > 1)."""
import pytest
import torch

from ggl.labels import LABEL_METHODS, count_labels, idlg_label, infer_labels

#: ten private indices spread over the split (the offline split interleaves the classes)
INDICES = [3, 14, 25, 136, 247, 358, 469, 570, 681, 992]


@pytest.mark.parametrize("name,width", [("lenet", None), ("mlp", None), ("convnet", 8)],
                         ids=["lenet", "mlp", "convnet"])
def test_idlg_label_is_exact_for_single_images(make_victim, observe, name, width):
    model = make_victim(name, width=width)
    truths, inferred = [], []
    for index in INDICES:
        observation, secret, _ = observe(model, [index])
        label = idlg_label(observation)
        assert label.shape == (1,) and label.dtype == torch.long
        truths.append(secret.labels.item())
        inferred.append(label.item())
    assert len(set(truths)) == 10              # every class is tried once
    assert inferred == truths


def test_count_labels_recovers_most_multisets(lenet, observe, public_images):
    """Bias-count on B = 4 random batches: measured 27/30 exact with 64 public images."""
    generator = torch.Generator().manual_seed(0)
    exact, batches = 0, 30
    for _ in range(batches):
        indices = torch.randperm(1000, generator=generator)[:4].tolist()
        observation, secret, _ = observe(lenet, indices, public_images=public_images)
        counted = count_labels(observation)
        assert counted.shape == (4,)                       # exactly B labels
        assert ((0 <= counted) & (counted < 10)).all()
        assert torch.equal(counted, counted.sort().values)  # returned sorted
        exact += torch.equal(counted, secret.labels.sort().values)
    assert exact / batches >= 0.7


def test_count_labels_without_public_images_still_returns_b_labels(lenet, observe):
    observation, secret, _ = observe(lenet, [10, 11, 12, 13, 14, 15])
    assert observation.public_images is None
    counted = count_labels(observation)
    assert counted.shape == (6,)
    assert ((0 <= counted) & (counted < 10)).all()


def test_count_labels_sees_repeated_classes(lenet, observe, public_images):
    # offline private index 10 * k + c holds class c: three 7s and one 2
    indices = [7, 17, 27, 2]
    observation, secret, _ = observe(lenet, indices, public_images=public_images)
    assert secret.labels.tolist() == [7, 7, 7, 2]
    assert count_labels(observation).tolist() == [2, 7, 7, 7]


def test_infer_labels_returns_known_labels(lenet, observe):
    observation, secret, _ = observe(lenet, [3, 4, 5], known_labels=True)
    labels = infer_labels(observation)
    assert labels is observation.labels
    assert torch.equal(labels, secret.labels)


def test_infer_labels_dispatches_on_batch_size(lenet, observe, public_images):
    single, secret, _ = observe(lenet, [3])
    assert single.labels is None
    assert torch.equal(infer_labels(single), idlg_label(single))
    assert torch.equal(infer_labels(single), secret.labels)
    batch, _, _ = observe(lenet, [3, 4, 5], public_images=public_images)
    assert torch.equal(infer_labels(batch), count_labels(batch))


def test_label_methods_registry():
    from ggl.labels import count_labels_over_steps

    assert LABEL_METHODS == {"idlg": idlg_label, "bias-count": count_labels,
                             "update-count": count_labels_over_steps}


def test_label_counts_over_the_local_steps_of_a_fedavg_update(mnist):
    """N = 8 images, 5 epochs of batches of 2 at lr 0.005 (20 steps): the counts over the
    steps recover every client's labels; reading update / lr as one gradient does not
    (experiments/benchmarks/fedavg_labels.py: 100% vs 72% at lr 0.001 over 50 clients)."""
    import collections

    from ggl.labels import label_method
    from ggl.local_training import LocalTraining
    from ggl.models import build_victim
    from ggl.scenario import Scenario

    model = build_victim("lenet", 1, 32, 10, seed=0)
    public = torch.stack([mnist.public[i][0] for i in range(64)])
    training = LocalTraining(epochs=5, batch_size=2, lr=0.001)
    right = {"update-count": 0, "bias-count": 0}
    for client in range(4):
        images, labels = mnist.private_batch(list(range(10 * client, 10 * client + 8)))
        observation, secret = Scenario(model, images, labels, num_classes=10,
                                       mean=mnist.mean, std=mnist.std, seed=client,
                                       public_images=public, local_training=training).observe()
        assert label_method(observation) == "update-count"
        truth = collections.Counter(secret.labels.tolist())
        for method in right:
            found = collections.Counter(LABEL_METHODS[method](observation).tolist())
            right[method] += sum((found & truth).values())
    assert right["update-count"] >= 31 and right["update-count"] > right["bias-count"] + 4


def test_count_labels_leaves_train_mode_model_untouched(make_victim, observe, public_images):
    model = make_victim("convnet", width=8, mode="train")
    observation, _, _ = observe(model, [1, 2], public_images=public_images)
    before = {k: v.clone() for k, v in observation.model.state_dict().items()}
    count_labels(observation)
    after = observation.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)     # BN buffers unchanged
    assert observation.model.training
