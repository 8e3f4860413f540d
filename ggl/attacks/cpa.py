"""Cocktail Party Attack (Kariyappa et al., ICML 2023): a batch unmixed by ICA.

For a linear layer ``y = W x + b`` and a batch of B inputs, the shared gradient is

    dW = sum_i g_i x_i^T = G X   (m x d),        db = sum_i g_i = G 1   (m,)

with ``G = [g_1 .. g_B]`` (m x B, the loss gradients at the layer's output, mean
reduction included) and ``X`` (B x d) the inputs. Each of the m rows of ``dW`` is a
linear mixture of the B inputs: a blind source separation ("cocktail party") problem
with m microphones, B speakers and d samples. When ``m >= B`` and ``G`` has rank B an
unmixing matrix ``M`` (B x m) with ``M G = diag(c) P`` (a permutation P and scales c)
exists, and ``M dW`` are the inputs, each times its scale.

The recipe (the paper's, with the official code's choices):

1. centre each row of ``dW`` over its d entries and whiten it to its B strongest
   principal components (``Z = Ww (dW - mean)``, B x d, unit covariance);
2. find the unmixing ``U`` (B x B) on ``Z``: scikit-learn's FastICA (log-cosh
   non-Gaussianity) starts it; then Adam refines it on a prior (``prior``, below);
3. the sources are ``M dW`` with ``M = U Ww``.

**Sign and scale** (ICA leaves both open; the paper's evaluation picked the sign with the
ground truth). ggl reads them off the bias gradient: ``M db = M G 1 = diag(c) P 1``, the
scale of each source, sign included, so ``x = (M dW)_k / (M db)_k`` exactly when the
unmixing is right. This needs the layer to have a bias; all of ggl's models have one.

**Order** is arbitrary: ggl's metrics match reconstructions to originals (Hungarian on
MSE, ``ggl.metrics.match``) before they score them.

**Priors** (``prior``):

* ``"paper"``: the paper's loss on the row-normalised ``U``: negative negentropy
  ``-mean_k (mean log cosh s_k)^2``, its decorrelation term
  ``decor * mean(exp(temperature |U U^T|) - 1)``, and for images ``tv`` x total
  variation (for feature vectors its ``nv`` sign and ``l1`` sparsity terms instead).
* ``"box"`` (ggl's own, the default): MNIST digits in a batch are far from independent
  (their centred images correlate 0.3-0.4 on average, up to 0.9; ``convfc``'s feature
  vectors 0.88), which ICA's whitening assumes away, and the paper's decorrelation term
  pushes the estimates further from the true, correlated sources. Instead each candidate
  row is scored by what a true source satisfies and a mixture does not: scaled by the
  bias, an image lies in the ``[0, 1]`` pixel box (a ReLU's features: non-negative), and
  it has many exact zeros (background, dead units), which a log-sparsity
  ``mean log(0.01 + |s| / rms(s))`` rewards. ``candidates`` x B rows (FastICA's B, the
  rest random) are refined independently, and the B lowest-loss distinct ones
  (correlation < 0.99) kept. Its weak point: several rows can fall into the same sparse
  source while a dense one is found by none (see experiments/README.md).
* ``"none"``: FastICA alone.

**Conv nets.** When the first linear layer reads a feature vector rather than the image
(``convfc``), the unmixed sources are the B feature vectors; each is inverted to an image
by pixel-space Adam matching the features (``ggl.attacks.analytic``'s helpers: relative
squared distance plus ``fi_tv`` x total variation), as the paper does (it matched cosine).
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn as nn

from ggl.attacks.analytic import invert_features, linear_layer
from ggl.attacks.analytic import reads_image as image_is_read
from ggl.attacks.base import Attack, Progress, Reconstruction
from ggl.attacks.pixel import INITS, read_back
from ggl.contracts import Observation
from ggl.errors import GGLError
from ggl.labels import infer_labels
from ggl.objective import total_variation

#: FastICA's iteration cap and tolerance (scikit-learn's defaults are 200 and 1e-4)
ICA_MAX_ITER, ICA_TOL = 1000, 1e-6
#: the log-sparsity's floor, relative to the source's RMS
SPARSITY_EPS = 1e-2
#: two refined rows whose sources correlate above this are the same source
SAME_SOURCE = 0.99


@dataclass
class CocktailPartyOptions:
    """``budget``: Adam steps on the unmixing matrix (lr ``lr``); ``prior``: what they
    minimise (``box``: ggl's box and sparsity prior; ``paper``: the paper's negentropy,
    decorrelation and TV; ``none``: FastICA alone, no steps).

    ``box`` prior: ``box`` x squared violation of the pixel box (features: of
    non-negativity) plus ``sparsity`` x Hoyer's L1/L2 ratio, per candidate row;
    ``candidates`` rows per source are refined.

    ``paper`` prior, its official code's values for a fully connected net on
    Tiny-ImageNet (``decor`` 1.47, ``temperature`` 12.4, ``tv`` 3.1, lr 1e-3 for 25,000
    steps) and, on feature vectors, its ImageNet VGG-16 sign and sparsity weights (``nv``
    0.13, ``l1`` 5).

    Feature inversion (conv nets): ``fi_budget`` Adam steps from ``fi_init`` with lr
    ``fi_lr`` (cosine annealed) on the relative feature distance plus ``fi_tv`` x TV.
    The paper's lr 0.1 stalled on ``convfc`` (MNIST, B = 8, seed 0, exact features: 14.5
    dB after 2,000 steps and after 6,000); lr 1.0 reached 23.7 dB and 3.0 68.8 dB.
    """

    budget: int = 3000
    lr: float = 1e-2
    prior: Literal["box", "paper", "none"] = "box"
    box: float = 10.0
    sparsity: float = 1.0
    candidates: int = 4
    decor: float = 1.47
    temperature: float = 12.4
    tv: float = 3.1
    nv: float = 0.13
    l1: float = 5.0
    fi_budget: int = 2000
    fi_lr: float = 3.0
    fi_tv: float = 3e-4
    fi_init: Annotated[str, INITS] = "rand"


class CocktailParty(Attack):
    """Cocktail Party Attack: ICA unmixes the first linear layer's weight gradient."""

    name = "cpa"
    summary = ("Cocktail Party: ICA unmixes the first linear layer's gradient into the B "
               "inputs (features -> feature inversion on conv nets)")
    Options = CocktailPartyOptions

    def _validate(self) -> None:
        super()._validate()
        o = self.options
        for name in ("lr", "fi_lr"):
            if not getattr(o, name) > 0:
                raise GGLError(f"{name} must be positive, got {getattr(o, name)}")
        for name in ("box", "sparsity", "decor", "temperature", "tv", "nv", "l1", "fi_tv"):
            if not getattr(o, name) >= 0:
                raise GGLError(f"{name} must be non-negative, got {getattr(o, name)}")
        if o.candidates < 1:
            raise GGLError(f"candidates must be at least 1 (rows refined per source), "
                           f"got {o.candidates}")
        if o.fi_budget < 1:
            raise GGLError(f"fi_budget must be at least 1 (feature-inversion steps), "
                           f"got {o.fi_budget}")

    # ------------------------------------------------------------------ the attack
    def _reconstruct(self, observation: Observation, progress: Progress) -> Reconstruction:
        o, batch = self.options, observation.batch_size
        # a copy: a train-mode model would update its BatchNorm buffers in every pass
        model = copy.deepcopy(observation.model).requires_grad_(False)
        layer, weight_index, bias_index = self._first_layer(model, observation)
        dW = observation.gradient[weight_index].double()              # (m, d)
        db = observation.gradient[bias_index].double()                # (m,)
        if not (torch.isfinite(dW).all() and torch.isfinite(db).all()):
            raise GGLError("the shared update is not finite (NaN or inf): cpa cannot "
                           "unmix it")
        reads_image = image_is_read(model, layer, observation, self.generator())
        whitening, spectrum = whiten(dW, batch)                       # (B, m)
        unmix = fastica_unmixing(whitening @ (dW - dW.mean(1, keepdim=True)), self.seed)
        history: list[float] = []
        if o.prior == "box":
            unmix = self._refine_box(unmix, whitening, dW, db, observation, reads_image,
                                     history, progress)
        elif o.prior == "paper":
            unmix = self._refine_paper(unmix, whitening, dW, observation, reads_image,
                                       history, progress)
        mixing_rows = unmix @ whitening                               # (B, m)
        scales = mixing_rows @ db                                     # (B,)
        sources = (mixing_rows @ dW) / scales.unsqueeze(1)            # (B, d)
        low, high = observation.pixel_bounds()
        info = {"case": "image" if reads_image else "features + feature inversion",
                "layer": {"weight": weight_index, "bias": bias_index,
                          "rows": layer.out_features, "in_features": layer.in_features},
                "prior": o.prior,
                # the B-th and (B+1)-th singular values relative to the first: a rank-B
                # mixture has a gap (the latter ~0); noise has none
                "spectrum": spectrum,
                "scale_rule": "bias gradient: x_k = (M dW)_k / (M db)_k",
                "label_method": "known" if observation.labels is not None else "inferred"}
        snapshots: list[tuple[int, torch.Tensor]] = []
        if reads_image:
            images = sources.view(batch, *observation.image_shape).to(low.dtype)
            images = torch.max(torch.min(images, high), low)
            loss = history[-1] if history else float("nan")
            progress(1, 1, loss)
        else:
            features = sources.to(low.dtype)
            images, fi_history, snapshots = invert_features(
                model, layer, features, observation, init=o.fi_init, lr=o.fi_lr, tv=o.fi_tv,
                steps=o.fi_budget, generator=self.generator(), progress=progress)
            loss = fi_history[-1]
            history += fi_history
            info["feature_loss"] = loss
        snapshots.append((len(history), images.detach().cpu().clone()))
        return Reconstruction(images=images.detach(), labels=infer_labels(observation),
                              loss=float(loss), history=history, snapshots=snapshots,
                              evaluations=len(history) + 1, iterations=len(history),
                              info=info)

    # ------------------------------------------------------------------ the layer
    @staticmethod
    def _first_layer(model: nn.Module, observation: Observation) -> tuple[nn.Linear, int, int]:
        """The first linear layer and the indices of its weight and bias gradients, checked
        for what unmixing needs beyond a closed-form reading (``analytic.linear_layer``)."""
        layer, weight_index, bias_index = linear_layer(model, observation, "cpa")
        batch = observation.batch_size
        if layer.out_features < batch:
            raise GGLError(f"cpa needs the first linear layer to have at least B = {batch} "
                           f"rows (outputs), it has {layer.out_features}: use a smaller "
                           f"batch or a model with a wide first linear layer (mlp, convfc)")
        if layer.in_features <= batch:
            raise GGLError(f"cpa needs the first linear layer's input to have more than "
                           f"B = {batch} entries, it has {layer.in_features}")
        return layer, weight_index, bias_index

    # ------------------------------------------------------------------ priors
    def _unit_box(self, dW: torch.Tensor, db: torch.Tensor, observation: Observation,
                  reads_image: bool):
        """The mixtures in the space where the sources' box is simple.

        Images: ``[0, 1]`` pixels, ``u = x std + mean``, so ``G U = std dW + mean db 1^T``
        (channel by channel), box ``[0, 1]``. Features: ``dW`` itself, box ``[0, inf)``
        (after a ReLU). Returns the mixtures ``(m, d)`` and the upper bound.
        """
        if not reads_image:
            return dW, float("inf")
        channels, height, width = observation.image_shape
        std = torch.tensor(observation.std, dtype=dW.dtype, device=dW.device)
        mean = torch.tensor(observation.mean, dtype=dW.dtype, device=dW.device)
        std = std.repeat_interleave(height * width)                   # (d,)
        mean = mean.repeat_interleave(height * width)
        return dW * std + db.unsqueeze(1) * mean, 1.0

    def _refine_box(self, unmix, whitening, dW, db, observation, reads_image, history,
                    progress) -> torch.Tensor:
        """Refine ``candidates`` x B rows on the box and sparsity prior; keep B distinct."""
        o, batch = self.options, observation.batch_size
        mixtures, upper = self._unit_box(dW, db, observation, reads_image)
        projected = (whitening @ mixtures).float()                    # (B, d)
        projected_bias = (whitening @ db).float()                     # (B,)

        def row_losses(rows):
            """Each row's loss ``(K,)`` and its bias-scaled source ``(K, d)``, for
            candidate rows ``(K, B)`` in the whitened basis."""
            unit = rows / rows.norm(dim=1, keepdim=True)
            sources = (unit @ projected) / (unit @ projected_bias).unsqueeze(1)   # (K, d)
            unit_rms = sources / sources.norm(dim=1, keepdim=True) * sources.shape[1] ** 0.5
            if upper == float("inf"):       # features: only the sign, at unit RMS
                outside = torch.relu(-unit_rms) ** 2
            else:                           # [0, 1] pixels: the bias fixed the scale
                outside = torch.relu(-sources) ** 2 + torch.relu(sources - upper) ** 2
            # log-sparsity of the source at unit RMS: drawn to exact zeros (a ReLU's,
            # an image's background), which only a single source has
            sparse = torch.log(SPARSITY_EPS + unit_rms.abs()).mean(1)
            return o.box * outside.mean(1) + o.sparsity * sparse, sources

        extra = torch.randn((o.candidates - 1) * batch, batch, generator=self.generator(),
                            dtype=unmix.dtype)
        rows = torch.cat([unmix.cpu(), extra]).float().to(unmix.device)  # (K, B)
        rows = self._descend(rows, lambda r: row_losses(r)[0].mean(), history, progress)
        with torch.no_grad():
            losses, sources = row_losses(rows)
            losses = torch.nan_to_num(losses, nan=float("inf"))
            chosen = distinct_best(losses, sources.double(), batch)
        unit = rows.detach().double()[chosen]
        return unit / unit.norm(dim=1, keepdim=True)

    def _refine_paper(self, unmix, whitening, dW, observation, reads_image, history,
                      progress) -> torch.Tensor:
        """Adam on the paper's loss over the row-normalised unmixing ``U`` (B x B)."""
        o, batch = self.options, observation.batch_size
        centre = dW.mean(1, keepdim=True)
        whitened = (whitening @ (dW - centre)).float()                # (B, d)
        offset = (whitening @ centre).float()                         # (B, 1)

        def paper_loss(rows):
            unit = rows / rows.norm(dim=1, keepdim=True)
            centred = unit @ whitened                                 # (B, d), unit variance
            negentropy = torch.log(torch.cosh(centred)).mean(1).pow(2).mean()
            cosines = (unit @ unit.T).abs()
            loss = -negentropy + o.decor * (torch.exp(o.temperature * cosines) - 1).mean()
            sources = centred + unit @ offset                         # centring undone
            if reads_image:
                loss = loss + o.tv * total_variation(
                    sources.view(batch, 1, *observation.image_shape)).mean()
            else:
                loss = loss + o.nv * torch.minimum(torch.relu(-sources).norm(dim=1),
                                                   torch.relu(sources).norm(dim=1)).mean()
                loss = loss + o.l1 * sources.abs().mean()
            return loss

        rows = self._descend(unmix.clone().float(), paper_loss, history, progress)
        unit = rows.double()
        return unit / unit.norm(dim=1, keepdim=True)

    def _descend(self, rows: torch.Tensor, loss_of, history: list[float],
                 progress: Progress) -> torch.Tensor:
        """``budget`` Adam steps (lr ``lr``) on the scalar ``loss_of(rows)`` from ``rows
        (K, B)``, the losses logged; returns the final rows, detached."""
        o = self.options
        rows = rows.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([rows], lr=o.lr)
        pending: list[torch.Tensor] = []
        for step in range(o.budget):
            loss = loss_of(rows)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            pending.append(loss.detach())
            if read_back(pending, history, step + 1 == o.budget):
                progress(step + 1, o.budget, history[-1])
        return rows.detach()


# ---------------------------------------------------------------------- linear algebra
def whiten(mixtures: torch.Tensor, components: int) -> tuple[torch.Tensor, dict]:
    """PCA whitening of the rows of ``mixtures (m, d)`` (each centred over its d entries)
    to their ``components`` strongest principal components.

    Returns ``W (components, m)`` with ``W C W^T = I`` for the rows' covariance C, and the
    relative singular values at the cut (``{"kept": s_B / s_1, "next": s_B+1 / s_1}``).
    """
    centred = mixtures - mixtures.mean(1, keepdim=True)
    covariance = centred @ centred.T / (centred.shape[1] - 1)               # (m, m)
    values, vectors = torch.linalg.eigh(covariance)                        # ascending
    values, vectors = values.flip(0), vectors.flip(1)
    kept = values[:components].clamp_min(values[0] * 1e-24 + 1e-300)
    spectrum = {"kept": float((kept[-1] / values[0]).sqrt()),
                "next": float((values[components].clamp_min(0) / values[0]).sqrt())
                if components < len(values) else 0.0}
    return vectors[:, :components].T / kept.sqrt().unsqueeze(1), spectrum


def fastica_unmixing(whitened: torch.Tensor, seed: int) -> torch.Tensor:
    """scikit-learn's FastICA (parallel, log-cosh) on already whitened data
    ``(B, d)``: the orthogonal unmixing ``U (B, B)`` whose rows give independent sources."""
    from sklearn.decomposition import FastICA
    from sklearn.exceptions import ConvergenceWarning

    ica = FastICA(whiten=False, fun="logcosh",
                  max_iter=ICA_MAX_ITER, tol=ICA_TOL, random_state=seed)
    with warnings.catch_warnings():
        # no convergence leaves a usable, if less separated, start for the refinement
        warnings.simplefilter("ignore", ConvergenceWarning)
        ica.fit(whitened.T.cpu().numpy())
    return torch.from_numpy(ica.components_).to(whitened)


def distinct_best(losses: torch.Tensor, sources: torch.Tensor, count: int) -> list[int]:
    """Indices of the ``count`` lowest-loss rows of ``sources (K, d)`` whose pairwise
    correlation stays below ``SAME_SOURCE``; when fewer are distinct, the best of the rest
    fill up (a source then appears twice)."""
    order = losses.argsort().tolist()
    correlation = torch.nan_to_num(torch.corrcoef(sources)).abs()
    chosen: list[int] = []
    for k in order:
        if all(correlation[k, j] < SAME_SOURCE for j in chosen):
            chosen.append(k)
        if len(chosen) == count:
            return chosen
    return chosen + [k for k in order if k not in chosen][:count - len(chosen)]
