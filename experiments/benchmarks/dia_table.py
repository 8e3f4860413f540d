"""Dropout Inversion Attack against IG and the WIIG oracle (the DIA issue's acceptance).

Victims with dropout (``--dropout p``, the client's gradient taken with its masks active):
``mlp`` and ``vit``, untrained, seed 0, on the offline MNIST private digits 0..3, batch 1,
labels inferred. Parts are ``<model>-<attack>-p<rate>``; each is a plain
``ggl run --model M --attack A --dropout p --index I``. Rows go to
``experiments/results/dia/<part>.jsonl``.

    python experiments/benchmarks/dia_table.py --part mlp-dia-p0.1 --indices 0,1,2,3
    python experiments/benchmarks/dia_table.py --table

Budget: 2000 iterations of IG's recipe for all three (the original runs up to 20,000 with
a plateau schedule); the latent parts ``<model>-ggl-adam-<ignore|model>-p<rate>`` take 2000
Adam steps in the shipped prior.
"""
from __future__ import annotations

from pathlib import Path

from foundation_attacks import main

RESULTS = Path(__file__).resolve().parents[1] / "results" / "dia"
BUDGET = 2000

PARTS = {
    f"{model}-{attack}-p{rate}": (
        f"{attack}{' (oracle)' if attack == 'wiig' else ''}, {model}, dropout {rate}, "
        f"{BUDGET} it",
        dict(model=model, attack=attack, dropout=rate, budget=BUDGET))
    for model in ("mlp", "vit")
    for rate in (0.1, 0.25, 0.5)
    for attack in ("ig", "dia", "wiig")
}
# beyond the original: the latent attack (Adam in the shipped prior) ignoring the dropout
# (the server's model runs with dropout off) or modelling the masks with the latent
PARTS.update({
    f"{model}-ggl-adam-{masks}-p{rate}": (
        f"ggl adam, masks {masks}, {model}, dropout {rate}, {BUDGET} steps",
        dict(model=model, attack="ggl", dropout=rate, budget=BUDGET,
             extra={"ng_method": "adam", "dropout_masks": masks}))
    for model in ("mlp", "vit")
    for rate in (0.1, 0.25, 0.5)
    for masks in ("ignore", "model")
})
# does the oracle stay above dia on the MLP when both run longer?
LONG = 8000
PARTS.update({
    f"mlp-{attack}-p0.1-{LONG}": (
        f"{attack}{' (oracle)' if attack == 'wiig' else ''}, mlp, dropout 0.1, {LONG} it",
        dict(model="mlp", attack=attack, dropout=0.1, budget=LONG))
    for attack in ("dia", "wiig")
})

if __name__ == "__main__":
    main(PARTS, RESULTS, __doc__, indices=4)
