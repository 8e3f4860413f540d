"""The threat model: the secret never reaches an attack, and defenses act on a copy."""
import dataclasses

import pytest
import torch

from ggl.api import prepare
from ggl.attacks import ATTACKS
from ggl.config import RunConfig
from ggl.contracts import Observation, Secret
from ggl.scenario import Scenario, client_gradient

DOCUMENTED_FIELDS = {"model", "gradient", "batch_size", "image_shape", "num_classes", "mean",
                     "std", "labels", "defenses", "public_images", "domain", "weight_update",
                     "server_sent"}


def _reachable_tensors(obj, seen=None):
    """Every tensor reachable from an Observation's fields (modules: params, buffers, attrs)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, torch.nn.Module):
        yield from obj.parameters()
        yield from obj.buffers()
        for module in obj.modules():
            for value in vars(module).values():
                if isinstance(value, torch.Tensor):
                    yield value
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _reachable_tensors(getattr(obj, f.name), seen)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _reachable_tensors(item, seen)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _reachable_tensors(item, seen)


def _storage(tensor):
    return tensor.untyped_storage().data_ptr()


# --------------------------------------------------------------------------- (a) NaN the secret
@pytest.mark.parametrize("attack,options", [("idlg", {"budget": 3}), ("ig", {"budget": 15}),
                                            ("dlg", {"budget": 2}), ("grnn", {"budget": 5}),
                                            ("cpa", {"budget": 5, "fi_budget": 5})])
def test_attack_ignores_secret_overwritten_with_nan(lenet, mnist, attack, options):
    images, labels = mnist.private_batch([3, 4])

    def observe(private):
        scenario = Scenario(lenet, private, labels.clone(), num_classes=10, mean=mnist.mean,
                            std=mnist.std, indices=(3, 4))
        observation, secret = scenario.observe()
        return observation, secret

    clean_observation, _ = observe(images.clone())
    poisoned_images = images.clone()
    observation, secret = observe(poisoned_images)
    secret.images.fill_(float("nan"))           # the Secret ...
    poisoned_images.fill_(float("nan"))         # ... and the tensor the Scenario was given
    secret.labels.fill_(0)

    clean = ATTACKS[attack](seed=0, **options).reconstruct(clean_observation)
    poisoned = ATTACKS[attack](seed=0, **options).reconstruct(observation)
    assert torch.isfinite(poisoned.images).all()
    assert torch.equal(poisoned.images, clean.images)
    assert torch.equal(poisoned.labels, clean.labels)
    assert poisoned.history == clean.history
    assert poisoned.loss == clean.loss


# --------------------------------------------------------------------------- (b) no shared storage
@pytest.mark.parametrize("protocol", ["fedsgd", "fedavg"])
@pytest.mark.parametrize("known_labels", [False, True])
@pytest.mark.parametrize("model,mode", [("lenet", "eval"), ("convnet", "train")])
def test_observation_shares_no_storage_with_the_secret(model, mode, known_labels, protocol):
    local = {"local_epochs": 2, "local_batch_size": 1} if protocol == "fedavg" else {}
    config = RunConfig(attack="idlg", model=model, model_mode=mode, width=8 if model ==
                       "convnet" else None, index=(3,), batch_size=2, device="cpu",
                       known_labels=known_labels, protocol=protocol, **local)
    scenario, data = prepare(config)
    observation, secret = scenario.observe()
    private_storages = {_storage(secret.images), _storage(secret.labels),
                        _storage(scenario.images), _storage(scenario.labels),
                        _storage(data.private.dataset.images)}   # the whole offline split
    tensors = list(_reachable_tensors(observation))
    # gradient, public images and every parameter/buffer of the model were walked
    model_tensors = list(observation.model.parameters()) + list(observation.model.buffers())
    shared_update = len(observation.gradient) if protocol == "fedavg" else 0
    assert len(tensors) >= len(observation.gradient) + 1 + len(model_tensors) + \
        known_labels + shared_update
    assert observation.public_images is not None
    for tensor in tensors:
        assert _storage(tensor) not in private_storages
    if known_labels:
        assert torch.equal(observation.labels, secret.labels)
    # and the model itself is a copy, not the scenario's object
    assert observation.model is not scenario.model
    assert all(_storage(p) != _storage(q) for p, q in
               zip(observation.model.parameters(), scenario.model.parameters()))


# --------------------------------------------------------------------------- (c) documented fields
def test_observation_fields_are_exactly_the_documented_set(lenet, observe):
    assert {f.name for f in dataclasses.fields(Observation)} == DOCUMENTED_FIELDS
    observation, secret, _ = observe(lenet, [3, 4])
    assert observation.labels is None
    assert observation.batch_size == 2
    assert observation.image_shape == (1, 32, 32)
    assert observation.num_classes == 10
    assert observation.defenses == ()
    assert len(observation.gradient) == len(list(lenet.parameters()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        observation.labels = secret.labels                    # frozen
    known, secret, _ = observe(lenet, [3, 4], known_labels=True)
    assert torch.equal(known.labels, secret.labels)


def test_observation_has_the_client_gradient(lenet, observe):
    observation, secret, _ = observe(lenet, [3, 4])
    expected = client_gradient(lenet, secret.images, secret.labels)
    for shared, own in zip(observation.gradient, expected):
        torch.testing.assert_close(shared, own)
        assert not shared.requires_grad


# --------------------------------------------------------------------------- (d) no Secret input
def test_attacks_reject_a_secret(lenet, observe):
    observation, secret, scenario = observe(lenet, [3])
    assert isinstance(secret, Secret)
    for name, cls in ATTACKS.items():
        budget = {"budget": 1} if "budget" in {f.name for f in
                                               dataclasses.fields(cls.Options)} else {}
        attack = cls(seed=0, **budget, **({"population": 1, "ng_method": "CMA"}
                                          if name == "ggl" else {}))
        with pytest.raises(TypeError):
            attack.reconstruct(secret)
        with pytest.raises(TypeError):
            attack.reconstruct(scenario)


# --------------------------------------------------------------------------- defense hook
class AddConstant:
    """A toy defense: returns a shifted copy and remembers what it was given."""

    def __init__(self, name, value):
        self.name, self.value = name, value
        self.received = self.received_copy = self.returned = self.context = None

    def apply(self, gradient, context):
        self.received = list(gradient)
        self.received_copy = [g.clone() for g in gradient]
        self.context = context
        self.returned = [g + self.value for g in gradient]
        return self.returned


class Double:
    name = "double"

    def apply(self, gradient, context):
        return [2 * g for g in gradient]


def test_defense_is_applied_to_a_copy(lenet, observe):
    defense = AddConstant("shift", 1.0)
    observation, secret, scenario = observe(lenet, [3, 4], defenses=[defense])
    clean = client_gradient(lenet, secret.images, secret.labels)
    assert [d.name for d in observation.defenses] == ["shift"]
    # the observation holds the defended gradient
    for shared, own in zip(observation.gradient, clean):
        torch.testing.assert_close(shared, own + 1.0)
    # the client's original gradient is what the defense got, and it was not mutated
    for received, before, own in zip(defense.received, defense.received_copy, clean):
        assert torch.equal(received, before)
        torch.testing.assert_close(received, own)
    assert torch.equal(defense.context["images"], secret.images)
    assert torch.equal(defense.context["labels"], secret.labels)
    # the observation keeps its own copy of what the defense returned
    for returned in defense.returned:
        returned.fill_(float("nan"))
    assert all(torch.isfinite(g).all() for g in observation.gradient)


def test_defenses_apply_in_order(lenet, observe):
    observation, secret, _ = observe(lenet, [3], defenses=[AddConstant("shift", 1.0),
                                                           Double()])
    clean = client_gradient(lenet, secret.images, secret.labels)
    assert [d.name for d in observation.defenses] == ["shift", "double"]
    for shared, own in zip(observation.gradient, clean):
        torch.testing.assert_close(shared, 2 * (own + 1.0))      # not 2 * own + 1


def test_scenario_does_not_touch_the_global_model(make_victim, observe):
    model = make_victim("convnet", width=8, mode="train")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    observation, _, _ = observe(model, [1, 2])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert observation.model.training
