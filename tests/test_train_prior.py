"""``ggl train-prior``: WGAN-GP training, checkpoints, resume after a kill, and bad input."""
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from ggl.gan_training.checkpoint import read_training_state, save_generator
from ggl.gan_training.quality import sample_statistics, wasserstein_estimate
from ggl.gan_training.trainer import PriorTrainer, TrainPriorConfig, train_prior
from ggl.generators.wgan_gp import RESOLUTIONS, WGANConfig, WGANGenerator, load_generator
from ggl.cli import cli
from ggl.errors import GGLError

#: a prior small enough to train a few steps in well under a second each on one CPU core
TINY = dict(width=8, latent_dim=16, batch_size=16, n_critic=2, samples=8)


def tiny_config(out, **overrides) -> TrainPriorConfig:
    return TrainPriorConfig(out=str(out), device="cpu", **{**TINY, **overrides})


def _user_error(result, *mentions):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.output.startswith("Error: ")
    for text in mentions:
        assert text in result.output, f"{text!r} not in {result.output!r}"


def _cli(*args):
    return CliRunner().invoke(cli, ["train-prior", *map(str, args)])


# --- the architecture ---------------------------------------------------------------------
@pytest.mark.parametrize("resolution", RESOLUTIONS)
@pytest.mark.parametrize("channels", [1, 3])
def test_generator_makes_the_requested_shape_in_tanh_range(resolution, channels):
    generator = WGANGenerator(WGANConfig(channels=channels, resolution=resolution, width=4,
                                         latent_dim=8)).eval()
    images = generator(torch.randn(3, 8))
    assert images.shape == (3, channels, resolution, resolution)
    assert images.abs().max() <= 1


def test_conditional_generator_draws_by_class_and_demands_labels():
    generator = WGANGenerator(WGANConfig(width=4, latent_dim=8, num_classes=10)).eval()
    with torch.no_grad():
        generator.embedding.weight.normal_()
        z = torch.randn(1, 8).repeat(2, 1)
        images = generator(z, torch.tensor([3, 7]))
    assert not torch.allclose(images[0], images[1])  # same latent, different class
    with pytest.raises(GGLError, match="class-conditional"):
        generator(z)


@pytest.mark.parametrize("class_weight", [1.0, 0.0])
def test_conditional_training_teaches_the_critics_class_head_by_its_weight(tmp_path,
                                                                          class_weight):
    trainer = PriorTrainer(tiny_config(tmp_path, conditional=True, class_weight=class_weight))
    assert trainer.critic.classes.out_features == 10
    head = trainer.critic.classes.weight.detach().clone()
    trainer.train_step()
    moved = not torch.equal(head, trainer.critic.classes.weight)
    assert moved == (class_weight > 0)


def test_class_weight_must_be_a_weight(tmp_path):
    _user_error(_cli("--conditional", "--class-weight", -1, "--out", tmp_path),
                "--class-weight must be >= 0")


# --- training does what a WGAN-GP should --------------------------------------------------
def test_training_lowers_the_wasserstein_estimate_on_offline_mnist(tmp_path, mnist):
    """A fresh critic finds the trained generator's samples closer to the public digits."""
    trainer = PriorTrainer(tiny_config(tmp_path, steps=150, n_critic=5, batch_size=32, lr=1e-3))
    before = wasserstein_estimate(trainer.generator, mnist, critic_steps=200, critic_width=16,
                                  seed=1)
    trainer.train()
    after = wasserstein_estimate(trainer.generator, mnist, critic_steps=200, critic_width=16,
                                 seed=1)
    assert after < 0.6 * before, (before, after)
    history = trainer.history
    assert len(history.wasserstein) == 150
    # the training critic's own estimate falls from its peak as the generator improves
    assert history.wasserstein[-1] < 0.8 * max(history.wasserstein)


def test_quality_statistics_measure_confidence_and_evenness():
    even = torch.eye(4).repeat(5, 1) * 0.9 + 0.025
    stats = sample_statistics(even)
    assert stats["confidence"] == pytest.approx(0.925)
    assert stats["min_class_share"] == pytest.approx(0.25)
    assert stats["coverage"] == pytest.approx(1.0)
    collapsed = sample_statistics(torch.tensor([[0.7, 0.1, 0.1, 0.1]]).repeat(8, 1))
    assert collapsed["min_class_share"] == 0 and collapsed["coverage"] == pytest.approx(0)


# --- checkpoints ----------------------------------------------------------------------------
def test_checkpoint_round_trip(tmp_path):
    trainer = PriorTrainer(tiny_config(tmp_path, steps=3, checkpoint_every=3))
    assert trainer.train()
    for name in ("checkpoint.safetensors", "checkpoint.json", "generator.safetensors",
                 "generator.json", "samples.png", "samples/step_0000003.png", "losses.png"):
        assert (tmp_path / name).is_file(), name
    record = json.loads((tmp_path / "generator.json").read_text())
    assert record["generator"] == {"architecture": "wgan-gp", "channels": 1, "resolution": 32,
                                   "latent_dim": 16, "width": 8, "num_classes": None}
    assert (record["dataset"], record["split"], record["step"], record["seed"]) == \
        ("mnist", "public", 3, 0)
    assert record["normalization"] == {"mean": [0.5], "std": [0.5]}

    loaded = load_generator(tmp_path)
    z = torch.randn(5, 16)
    trainer.generator.eval()
    with torch.no_grad():
        assert torch.equal(loaded(z), trainer.generator(z))
    saved, tensors = read_training_state(tmp_path / "checkpoint.safetensors")
    assert saved["step"] == 3 and len(saved["history"]["wasserstein"]) == 3
    assert any(k.startswith("optimizer_critic.") for k in tensors) and "rng" in tensors


def _final_weights(directory):
    return load_file(str(directory / "checkpoint.safetensors"))


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_after_an_interruption_loses_nothing(tmp_path):
    straight = tmp_path / "straight"
    PriorTrainer(tiny_config(straight, steps=6, checkpoint_every=2)).train()

    interrupted = tmp_path / "interrupted"

    def crash_at_step_5(step, total, losses):
        if step == 5:
            raise RuntimeError("power cut")  # steps 3..5 were never checkpointed

    with pytest.raises(RuntimeError, match="power cut"):
        PriorTrainer(tiny_config(interrupted, steps=6, checkpoint_every=2)).train(crash_at_step_5)
    assert read_training_state(interrupted / "checkpoint.safetensors")[0]["step"] == 4
    resumed = PriorTrainer(tiny_config(interrupted, steps=6, checkpoint_every=2), resume=True)
    assert resumed.step == 4
    assert resumed.train()
    _assert_same_weights(_final_weights(straight), _final_weights(interrupted))
    saved = read_training_state(interrupted / "checkpoint.safetensors")[0]
    straight_saved = read_training_state(straight / "checkpoint.safetensors")[0]
    assert saved["history"] == straight_saved["history"]


def test_moving_average_is_the_saved_prior_and_follows_its_formula(tmp_path):
    decay = 0.9
    trainer = PriorTrainer(tiny_config(tmp_path, steps=3, ema=decay))
    trainer.train()
    averaged = trainer.averaged.module.state_dict()
    assert not torch.equal(averaged["project.0.weight"], trainer.generator.project[0].weight)
    saved = load_file(str(tmp_path / "generator.safetensors"))
    for key, value in averaged.items():
        assert torch.equal(saved[key], value.cpu()), key

    # after the first step the average is a copy; each later step: avg = d * avg + (1 - d) * w
    replay = PriorTrainer(tiny_config(tmp_path / "replay", steps=3, ema=decay))
    weights = []
    for _ in range(3):
        replay.train_step()
        weights.append(replay.generator.project[0].weight.detach().clone())
    expected = weights[0]
    for w in weights[1:]:
        expected = decay * expected + (1 - decay) * w
    torch.testing.assert_close(replay.averaged.module.project[0].weight, expected)
    # the trained generator is unchanged by keeping an average (same seed, same steps)
    plain = PriorTrainer(tiny_config(tmp_path / "plain", steps=3))
    for _ in range(3):
        plain.train_step()
    torch.testing.assert_close(plain.generator.project[0].weight, weights[-1], rtol=0, atol=0)


def test_resume_restores_the_moving_average(tmp_path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    PriorTrainer(tiny_config(straight, steps=4, checkpoint_every=2, ema=0.5)).train()
    PriorTrainer(tiny_config(stopped, steps=2, checkpoint_every=2, ema=0.5)).train()
    resumed = PriorTrainer(tiny_config(stopped, steps=4, checkpoint_every=2, ema=0.5), resume=True)
    assert resumed.train()
    _assert_same_weights(_final_weights(straight), _final_weights(stopped))
    assert any(k.startswith("averaged.") for k in _final_weights(stopped))
    with pytest.raises(GGLError, match="ema: checkpoint 0.5 vs now 0.0"):
        PriorTrainer(tiny_config(stopped, steps=6), resume=True)


def test_a_stop_request_checkpoints_the_current_step(tmp_path):
    trainer = PriorTrainer(tiny_config(tmp_path, steps=50, checkpoint_every=100))
    assert not trainer.train(should_stop=lambda: trainer.step == 3)
    assert read_training_state(tmp_path / "checkpoint.safetensors")[0]["step"] == 3


def test_killed_command_resumes_to_the_same_prior(tmp_path):
    """SIGKILL a real ``ggl train-prior`` process mid-run, resume it, compare weights."""
    common = ["--steps", "8", "--checkpoint-every", "2", "--width", "8", "--latent-dim", "16",
              "--batch-size", "16", "--n-critic", "2", "--device", "cpu", "--no-score",
              "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "ggl.cli", "train-prior"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run([*command, "--out", straight, *common], env=env, check=True,
                   capture_output=True, timeout=300)

    process = subprocess.Popen([*command, "--out", killed, *common], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (killed / "checkpoint.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    step = read_training_state(killed / "checkpoint.safetensors")[0]["step"]
    assert 2 <= step < 8 or process.returncode == 0
    subprocess.run([*command, "--out", killed, "--resume", *common], env=env, check=True,
                   capture_output=True, timeout=300)
    _assert_same_weights(_final_weights(straight), _final_weights(killed))


def test_shipped_mnist_prior_draws_every_digit_recognisably():
    """The prior `ggl run` uses by default (experiments/README.md has its training command),
    scored the way a user would: `ggl score-prior` (no path = the shipped prior).

    The issue's bar: confidence >= 0.9 and every class >= 5% of samples. The shipped prior
    measures 0.901 / 0.916 / 0.905 with scoring seeds 0 / 1 / 2 (real private digits: 0.968),
    so the bar is asserted on the mean over the three scorers, which is steadier than one
    classifier's training run.
    """
    from ggl.generators import default_prior

    generator = load_generator(default_prior("mnist"))
    assert generator.config == WGANConfig(channels=1, resolution=32, latent_dim=128, width=64)
    confidences = []
    for seed in (0, 1, 2):
        result = _score_cli("--json", "--seed", seed)
        assert result.exit_code == 0, result.output
        quality = json.loads(result.output)
        assert quality["trained_on"] == "mnist" and quality["samples"] == 2000
        assert quality["min_class_share"] >= 0.05, quality["class_shares"]
        assert quality["coverage"] > 0.98, quality
        confidences.append(quality["confidence"])
    assert sum(confidences) / 3 >= 0.9, confidences


def _score_cli(*args):
    return CliRunner().invoke(cli, ["score-prior", "--device", "cpu", *map(str, args)])


def test_score_prior_reports_a_trained_folder(trained):
    out, _ = trained
    result = _score_cli(out, "--samples", 100)
    assert result.exit_code == 0, result.output
    assert f"{out} (trained on mnist, step 2), 100 samples, scored on mnist:" in result.output
    assert "prior quality: confidence" in result.output and "coverage" in result.output


def test_score_prior_bad_input(tmp_path):
    _user_error(_score_cli(tmp_path / "nowhere"), "does not exist", "ggl train-prior --out")
    _user_error(_score_cli("--samples", 0), "--samples must be at least 1")
    _user_error(_score_cli("--dataset", "cifar10"), "ships a prior for mnist only")
    rgb = WGANGenerator(WGANConfig(channels=3, width=4, latent_dim=8))
    save_generator(tmp_path / "rgb", rgb, {"generator": rgb.config.to_dict(), "step": 0})
    _user_error(_score_cli(tmp_path / "rgb"), "3-channel images but mnist has 1 channels")


def test_cli_trains_scores_and_reports(tmp_path):
    result = _cli("--steps", 2, "--width", 8, "--latent-dim", 16, "--batch-size", 16,
                  "--n-critic", 1, "--device", "cpu", "--quiet", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert "2/2 generator steps" in result.output and "prior quality" in result.output
    quality = json.loads((tmp_path / "generator.json").read_text())["quality"]
    assert quality["available"] and 0 < quality["confidence"] <= 1
    assert len(quality["class_shares"]) == 10 and quality["scorer_private_accuracy"] > 0.9
    assert quality["real_confidence"] > 0.9  # real digits: what a good prior approaches


# --- bad input: one clear error, nothing overwritten --------------------------------------
def test_resolution_the_architecture_cannot_make(tmp_path):
    _user_error(_cli("--resolution", 48, "--out", tmp_path), "cannot make 48x48",
                "16, 32, 64, 128")


def test_missing_dataset_files(tmp_path):
    _user_error(_cli("--dataset", "cifar10", "--data-root", tmp_path / "nothing",
                     "--out", tmp_path / "out"), "cifar10")
    assert not (tmp_path / "out" / "checkpoint.safetensors").exists()


@pytest.fixture
def trained(tmp_path):
    """A finished 2-step run in ``tmp_path/run`` and the bytes of its checkpoint."""
    out = tmp_path / "run"
    PriorTrainer(tiny_config(out, steps=2, checkpoint_every=2)).train()
    return out, (out / "checkpoint.safetensors").read_bytes()


def _tiny_cli_args(out, **changes):
    options = {"--width": 8, "--latent-dim": 16, "--batch-size": 16, "--n-critic": 2,
               "--steps": 4, "--device": "cpu", "--out": out, **changes}
    return [item for pair in options.items() for item in pair] + ["--quiet", "--no-score"]


def test_existing_checkpoint_is_not_overwritten_without_resume(trained):
    out, before = trained
    _user_error(_cli(*_tiny_cli_args(out)), "already holds a training checkpoint", "--resume")
    assert (out / "checkpoint.safetensors").read_bytes() == before


def test_resume_with_another_architecture_is_refused(trained):
    out, before = trained
    _user_error(_cli(*_tiny_cli_args(out, **{"--width": 16}), "--resume"),
                "other settings", "width: checkpoint 8 vs now 16")
    assert (out / "checkpoint.safetensors").read_bytes() == before


def test_resume_without_a_checkpoint_is_refused(tmp_path):
    _user_error(_cli(*_tiny_cli_args(tmp_path / "empty"), "--resume"), "holds no checkpoint")


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_checkpoint_is_reported_and_left_alone(trained, damage):
    out, before = trained
    path = out / "checkpoint.safetensors"
    broken = before[: len(before) // 2] if damage == "truncate" else b"\x00" * 64
    path.write_bytes(broken)
    _user_error(_cli(*_tiny_cli_args(out), "--resume"), "corrupt or truncated", str(path))
    assert path.read_bytes() == broken


def test_corrupt_generator_file_is_one_clear_error(trained):
    out, _ = trained
    weights = out / "generator.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(GGLError, match="corrupt or truncated"):
        load_generator(out)
    with pytest.raises(GGLError, match="does not exist"):
        load_generator(out / "nowhere")


def test_bad_training_numbers(tmp_path):
    _user_error(_cli("--steps", 0, "--out", tmp_path), "--steps must be >= 1")
    _user_error(_cli("--n-critic", 0, "--out", tmp_path), "--n-critic must be >= 1")
    with pytest.raises(GGLError, match="--lr must be > 0"):
        train_prior(tiny_config(tmp_path, lr=0.0))
    _user_error(_cli("--ema", 1.0, "--out", tmp_path), "--ema is the moving average's decay",
                "e.g. 0.999")


def test_resume_removes_the_temporary_files_a_kill_left(trained):
    """A kill -9 during a checkpoint's write leaves ``.checkpoint.safetensors.*.tmp``; the
    resumed run deletes it (and a sweep store's repair does the same in its folder)."""
    out, _ = trained
    stale = out / ".checkpoint.safetensors.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    result = _cli(*_tiny_cli_args(out, **{"--steps": 3, "--checkpoint-every": 2}),
                  "--resume")
    assert result.exit_code == 0, result.output
    assert not stale.exists()
    assert not list(out.glob(".*.tmp"))


def test_a_kill_before_the_first_checkpoint_leaves_a_folder_that_starts_again(tmp_path):
    """The step's prior and samples are written before the checkpoint that declares the
    step done; a run killed in between (no checkpoint yet) starts from scratch, with or
    without --resume, while a prior folder train-prior did not write stays refused."""
    out = tmp_path / "run"
    PriorTrainer(tiny_config(out, steps=2, checkpoint_every=2)).train()
    assert (out / "samples" / "step_0000002.png").is_file()
    (out / "checkpoint.safetensors").unlink()          # killed during its first checkpoint
    for resume in ([], ["--resume"]):
        result = _cli(*_tiny_cli_args(out, **{"--steps": 2, "--checkpoint-every": 2}),
                      *resume)
        assert result.exit_code == 0, result.output
        assert (out / "checkpoint.safetensors").is_file()
        (out / "checkpoint.safetensors").unlink()
    (out / ".train-prior-started").unlink()           # now a prior folder of unknown origin
    _user_error(_cli(*_tiny_cli_args(out)), "already holds a prior")


def test_resume_as_the_hint_prints_it_takes_the_settings_of_the_checkpoint(tmp_path):
    """The stopped-early hint is ``ggl train-prior --resume --out DIR``; run as printed, it
    continues with the dataset, learning rate and step target the run started with (not the
    defaults), and its speed figure counts only the steps it trained itself."""
    out = tmp_path / "prior"
    PriorTrainer(tiny_config(out, steps=2, checkpoint_every=2, lr=3e-4)).train()
    saved = read_training_state(out / "checkpoint.safetensors")[0]["config"]
    assert saved["lr"] == 3e-4 and saved["steps"] == 2
    finished = _cli("--resume", "--out", out, "--no-score", "--quiet", "--device", "cpu")
    assert finished.exit_code == 0, finished.output
    assert "2/2 generator steps, 0 in this run, nothing left to train" in finished.output

    result = _cli("--resume", "--out", out, "--steps", 3, "--no-score", "--quiet",
                  "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "3/3 generator steps, 1 in this run," in result.output
    record = read_training_state(out / "checkpoint.safetensors")[0]
    assert record["step"] == 3 and record["config"]["lr"] == 3e-4
    assert record["config"]["width"] == saved["width"]
    # an architecture setting given now that the checkpoint disagrees with is still refused
    _user_error(_cli("--resume", "--out", out, "--width", 12, "--quiet"), "width")


def test_stopped_run_prints_a_resume_command_that_works(tmp_path, monkeypatch):
    from ggl.gan_training import trainer as trainer_module

    out = tmp_path / "my prior"
    args = _tiny_cli_args(out, **{"--steps": 4, "--checkpoint-every": 100})
    original = trainer_module.PriorTrainer.train
    monkeypatch.setattr(trainer_module.PriorTrainer, "train", lambda self, progress, stop:
                        original(self, progress, lambda: self.step == 1))
    stopped = _cli(*args)
    assert stopped.exit_code == 130
    hint = stopped.output.strip().splitlines()[-1]
    command = hint.split("continue with: ")[1]
    assert command == f"ggl train-prior --resume --out '{out}'"
    monkeypatch.setattr(trainer_module.PriorTrainer, "train", original)
    resumed = _cli(*shlex.split(command)[2:], "--no-score", "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert "4/4 generator steps, 3 in this run," in resumed.output


def test_checkpoints_also_come_by_time_without_changing_the_prior(tmp_path, monkeypatch):
    """``--checkpoint-minutes``: with a clock that jumps a minute per step, every step is
    checkpointed although ``checkpoint_every`` is 100, and the weights equal a run that
    checkpointed only at the end (checkpoints draw no random numbers)."""
    from ggl.gan_training import trainer as trainer_module

    PriorTrainer(tiny_config(tmp_path / "once", steps=3, checkpoint_every=100)).train()
    clock = iter(range(0, 10_000, 60))
    monkeypatch.setattr(trainer_module.time, "monotonic", lambda: next(clock))
    saved = []
    timed = PriorTrainer(tiny_config(tmp_path / "timed", steps=3, checkpoint_every=100,
                                     checkpoint_minutes=1.0))
    original = timed.save_checkpoint
    timed.save_checkpoint = lambda **kw: saved.append(timed.step) or original(**kw)
    timed.train()
    assert saved == [1, 2, 3]
    _assert_same_weights(_final_weights(tmp_path / "once"), _final_weights(tmp_path / "timed"))
