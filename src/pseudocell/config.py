"""The one configuration object of a pseudocell run.

Every hyper-parameter has one name, used in the TOML file, on the CLI, in Tune search
spaces and in MLflow params (``alpha``, ``beta``, ``p``, ``lam``, ``rounds``, ``sigma``,
``mask_radius``, ``peak_threshold``, ``patch_size``, ``radius`` ...).

>>> cfg = Config(alpha=0.1)
>>> cfg.alpha, cfg.beta
(0.1, 0.05)
>>> Config.from_dict(cfg.to_dict()) == cfg
True
"""
from __future__ import annotations


import hashlib
import json
import math
import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from pseudocell.errors import InvalidConfigError

__all__ = ["Config", "load_config", "read_config_dict", "dump_toml", "NON_ALGORITHMIC_FIELDS"]

#: The mode of a config that names none.
DEFAULT_MODE = "partial"

#: Fields that change where or how fast a run executes, not what it computes. Not
#: bit-neutral: the torch thread count changes the order of float sums (one U2OS
#: detector: held-out F1 0.880 with 2 threads, 0.864 with 1), the device likewise.
NON_ALGORITHMIC_FIELDS = frozenset({"device", "num_threads"})
#: Fields added after runs were made, at the value that behaves as before the field: left
#: out of the hash there, so those runs resume unchanged.
HASH_NEUTRAL = {"precision": "float32", "detector_warm_start": False}
#: Fields no stage reads (only the choice of the final round does): outside the hash too,
#: so that changing them re-runs no stage.
FINAL_ONLY_FIELDS = frozenset({"collapse_ratio"})

#: Fields only one mode reads: outside the hash of every other mode's runs (so that a
#: partial run's hash, and its resume, do not depend on them).
_LABEL_FREE_FIELDS = frozenset({
    "fusion_beta", "kmeans_k", "polarity", "seed_fraction", "seed_negatives",
    "psm_objective", "psm_iters", "psm_batch", "psm_crop", "psm_lr"})
_ADAPT_FIELDS = frozenset({
    "source_training", "target_diameter", "grl_lambda", "grl_level", "adapt_schedule",
    "uncertainty", "mc_passes", "detector_dropout", "adapt_min_confidence",
    "adapt_negatives"})
MODE_FIELDS = {"label-free": _LABEL_FREE_FIELDS, "adapt": _ADAPT_FIELDS,
               "adapt-ranker": _ADAPT_FIELDS}

#: Fields whose None default means "chosen by the run" and that accept "auto" for it.
AUTO_FIELDS = ("cell_diameter", "peak_threshold", "target_diameter")

#: Arithmetic of prediction (``Config.precision``); the same tuple as
#: :data:`pseudocell.core.detector.PRECISIONS` (this module imports no torch).
PRECISIONS = ("float32", "bfloat16")

#: How the adapt modes' detectors learn from the source (``Config.source_training``).
SOURCE_TRAINING = ("plain", "augment", "augment-round0", "dann")

#: Largest seed numpy's and torch's generators take (seeds are unsigned 32-bit).
MAX_SEED = 2**32 - 1

#: ``cpu``, ``cuda`` or ``cuda:N`` (whether CUDA is there is checked by validation).
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclass(frozen=True, kw_only=True)
class Config:
    """All settings of the partial-annotation pseudo-label loop.

    Defaults follow the reference (Fujii et al. 2021 and its code) except where noted:
    the detector is narrower and trained on random crops so that a round fits in minutes
    on two CPU cores (reference: widths 64-128-256-512-512, 30 epochs on whole frames).

    Parameters
    ----------
    mode : str, default="partial"
        The pipeline (:data:`pseudocell.stages.modes.MODES`): ``partial`` is the loop from
        clicked points; ``label-free`` starts it from seed points found with no click
        (PSM self-activation maps; clicks may be added); ``adapt`` trains on fully
        labelled source images and adapts to unlabeled target images (pseudo-heatmaps,
        uncertainty, curriculum); ``adapt-ranker`` also feeds the admitted target peaks
        to the PU learner and P-ranker. Left out of the config hash while it is the default, so runs made
        before modes existed resume unchanged.
    seed : int, default=0
        Run seed in [0, 2**32 - 1]; every stage derives its own seed from (seed, round,
        stage name).
    rounds : int, default=2
        Pseudo-labelling rounds. Round ``rounds`` only trains and predicts the final
        detector, so ``rounds=2`` trains three detectors (the paper's rounds 0, 1, 2).
    cell_diameter : float or None, default=None ("auto")
        Cell diameter (px) in the user's images, as a blob: a nucleus stain's nucleus, a
        bright-field cell's bright interior. None (or ``"auto"`` in TOML and on the CLI)
        estimates it at the clicked cells (scale-space Laplacian of Gaussian, logged and
        written to ``round_000/scale/scale.json``). Images are resized so that cells are
        :data:`~pseudocell.core.scale.CANONICAL_DIAMETER` (12) px across before any
        stage sees them; every pixel setting below (``sigma``, ``mask_radius``,
        ``detector_crop``, ``peak_min_distance``, ``patch_size``) is in pixels of the
        resized images. Points, detections and ``radius`` stay in original pixels.
    background_ratio : float, default=0.0 (off)
        Round 0 can also learn from confident background: per training image, up to
        this many times its clicks of grid points far from anything cell-like become
        negative labels (kind ``pseudo_neg``, round -1). Off by default: at 2.0 it
        lowered round 0's held-out F1 on every set tried (benchmark config, seed 0:
        bright-field 0.951 to 0.925, U2OS 0.799 to 0.699, NIH3T3 0.883 to 0.836); with
        discs kept clear of anything cell-like, too few points remain on nuclei images.
    background_level : float, default=0.4
        A grid point is background when the strongest blob response near it (any
        polarity, scales around the cell size) is below this fraction of the median at
        the clicked cells; it must also be 1.5 cell diameters from every click.
    sigma : float, default=6.0
        Gaussian sigma (px) of the heatmap target at each point; peak value 1.
    mask_radius : float, default=12.0
        Radius (px) of the loss-mask disc around every positive and negative point.
    unet_widths : tuple of int, default=(8, 16, 32, 64)
        Channels per U-Net level (reference 64-128-256-512-512).
    detector_iters : int, default=500
        Optimiser steps per detector training (random crops, batch ``detector_batch``).
    detector_batch : int, default=8
    detector_crop : int, default=128
        Side (px) of the random training crops; multiple of 2**(levels-1).
    detector_lr : float, default=1e-3
        Adam learning rate (reference).
    detector_head_init : {None, "zero"}, default=None
        ``"zero"``: the detector's output layer starts at zero weights and bias, so every
        training starts from "no cell anywhere" (:func:`pseudocell.core.detector.
        build_unet`); None: PyTorch's default initialisation. Each round trains its
        detector from scratch in ``detector_iters`` steps, and a start far from "no
        cell" can end less trained: on the human-in-the-loop benchmark one such round
        (bright-field seed 0's last) fell to held-out F1 0.844 from 0.954 and reached
        0.954 retrained with a zero head; over that benchmark's 144 round-to-round
        changes the start's loss did not predict the falls, though.
    detector_warm_start : bool or None, default=None
        True: the detector of round r >= 1 starts from round r - 1's trained weights
        (still ``detector_iters`` steps of a fresh Adam on round r's labels), as a
        person's labelling tool fine-tunes its model after each correction; round 0 (and
        a mode's first detector) still starts from ``detector_head_init``. None / False:
        every round trains from scratch (the reference method).
    peak_mode : {"absolute", "reference"}, default="absolute"
        ``absolute``: peaks of the raw detector output above ``peak_threshold``.
        ``reference``: the reference code's per-image 0-255 scaling with threshold 128,
        which yields peaks even on a blank prediction.
    peak_threshold : float or None, default=None
        Threshold on the detector output (targets peak at 1). None calibrates it in every
        round from the run's own labels on the training images (held-out images never
        influence it): Otsu's split of the candidate peak values, lowered if needed so
        that ``peak_recall`` of the known positives stay detected; the value used is the
        round's ``peak_threshold`` metric and travels with the final model. A number
        fixes it (before this existed: 0.3).
    peak_recall : float, default=0.9
        Share of the known positive points (annotated and pseudo-positive) whose heatmap
        peak the calibrated threshold must keep.
    unlabeled_ratio : float, default=0.5
        The unlabeled set X_U holds the local maxima down to this fraction of the peak
        threshold (detections are those above the threshold). With a calibrated
        threshold the detections are mostly cells; the band below it is where the
        background the detector fires on lives, and where negative pseudo-labels come
        from. With U = detections only (1.0), 71 % of the bright-field benchmark's round-0
        negatives (seed 0) were cells, and round 1 lost recall (held-out 0.93 to 0.88).
    peak_min_distance : int, default=6
    patch_size : int, default=27
        Side (px, odd) of the patches cropped around peaks for the PU learner.
    pu_prior : float or None, default=None
        nnPU class prior (share of cells in U); None estimates it (``pu_prior_estimate``).
    pu_prior_estimate : {"elkan-noto", "reference"}, default="elkan-noto"
        ``elkan-noto``: from a labeled-vs-unlabeled classifier on the patches (Elkan &
        Noto 2008), so a U that is mostly cells gets a high prior and the PU classifier
        (see ``pu_agree``) calls few of them background. That holds in round 0; from
        round 1 on X_P holds the pseudo-positives, which are not labelled at random, and
        the estimate falls (0.22-0.59 where U was 70-98 % cells on the human benchmark:
        benchmarks/results/human.md). ``reference``: (#P + 0.5 #U) / N
        as the reference code, whatever U holds.
    pu_epochs : int, default=20
    pu_lr : float, default=1e-3
        Reference: 200 epochs at 1e-4; fewer epochs at a larger step fit the CPU budget.
    pu_weight_decay : float, default=5e-3
    pu_batch : int, default=512
    pu_feature_dim : int, default=128
        Width of the penultimate layer whose activations are the ranker features.
    p : float, default=4.0
        P-classification exponent of the unlabeled term.
    lam : float, default=0.1
        L2 weight of the linear ranker.
    neg_ranker : {"flip", "provisional"}, default="flip"
        How the negative ranker is trained: ``flip`` = U as positive class, P as
        unlabeled (the paper); ``provisional`` = the rest of U after removing the top
        ``provisional_top`` by P-score, against P and that top (design.md's reading of
        the reference code). See :func:`pseudocell.core.select.rank_unlabeled`.
    neg_peak_quantile : float, default=0.5
        Negative pseudo-labels are chosen only among detections whose detector peak is
        at most this quantile of U's peaks (1.0: anywhere, as in the paper). On the
        demo's training images it raised the share of negatives that are background
        from 0.77 to 0.90 (round 0) and from 0.34 to 0.45 (round 1).
    provisional_top : float, default=0.2
        Fraction of U taken as provisionally positive (``neg_ranker="provisional"``).
    alpha, beta : float, default=0.05
        Fractions of U added as positive / negative pseudo-labels per round (at most:
        see ``pu_agree``).
    pu_agree : bool, default=True
        A pseudo-label must agree with the round's nnPU classifier: positives need a PU
        score > 0, negatives < 0. Where U holds few background detections (a clean
        round 0 on nuclei), the rankers' bottom 5 % are mostly cells and the veto keeps
        them out.
    neg_cap : float or None, default=None
        At most ``neg_cap`` x the estimated number of background detections in U become
        negative pseudo-labels in a round (the estimate: the detections below the peak
        threshold less the cells expected there, see
        :func:`pseudocell.core.select.background_estimate`); None: ``beta`` x #U, as the
        paper. After the first round U is mostly cells (80-98 % on the
        human-in-the-loop benchmark, where beta x #U negatives were 0-87 % background
        and recall fell round after round); 0.5 removed most of those negatives there.
        Needs a band of candidates below the threshold (``unlabeled_ratio`` < 1, and
        ``peak_mode="absolute"`` or a fixed ``peak_threshold``).
    peak_rank_weight : float or None, default=None
        Order U for both pseudo-label lists by a blend of the rankers' order and the
        detector's peak height (:func:`pseudocell.core.select.blend_ranks`: positives
        by ``(1 - w)`` rank of the P-score + ``w`` rank of the peak, negatives by the
        N-score and the lowest peaks); None: the rankers alone, as the paper. Over the
        36 rounds each of the human-in-the-loop benchmark's U2OS and bright-field runs
        (``benchmarks/negatives.py --summary``) the top 5 % of U by P-score were 11 %
        background on U2OS nuclei (12 % with ``pu_agree``'s veto), more than U itself
        (8 %), and 6 % on bright-field; blended at 0.5 they were 3.6 % and 0.9 %, and
        the bottom 5 % (negatives) were 34 % and 94 % background against 24 % and 87 %
        by N-score.
    radius : float, default=15.0
        Matching radius (px) for evaluation (the paper's).
    extra_radii : tuple of float, default=()
        More matching radii to report (the demo adds 8 px, about half a cell diameter).
    collapse_ratio : float, default=0.5
        Guard against a collapsed detector: the last round's detector becomes ``final/``
        unless its detections find fewer than ``collapse_ratio`` times the best earlier
        round's share of the annotated points (within ``mask_radius``); then that
        earlier round's detector is final and the reason is logged and written to
        ``metrics.json``. 0 turns the guard off. Not part of the config hash.
    fusion_beta : float, default=1.0
        Label-free: weight of the raw image in the fused image ``I_f = I_am +
        fusion_beta * I_raw`` that K-means splits. The paper uses 2.5 and 4; 1.0 gave
        the best PSM points on the shared sets (F1 of the points on 4 training images,
        1.0 / 2.5 / raw image only: bright-field 0.565 / 0.452 / 0.237, MoNuSeg 0.762 /
        0.772 / 0.784, U2OS 0.833 / 0.837 / 0.834, NIH3T3 0.838 / 0.830 / 0.825). 0
        clusters the activation map alone.
    kmeans_k : int, default=3
        Label-free: K-means clusters per image; the brightest (of the fused image, in
        which cells are bright) is the cell cluster.
    polarity : {"auto", "bright", "dark"}, default="auto"
        Label-free: whether cells are brighter (fluorescence) or darker (H&E nuclei)
        than their surroundings in the grayscale image; ``auto`` picks the polarity
        whose extreme intensity cluster breaks into more cell-sized objects.
    seed_fraction : float, default=0.7
        Label-free: share of the PSM points, most confident first, that become round
        0's positive labels (kind ``seed``); the confidence cut. Held-out F1 of the final
        detector (benchmark config, seed 0) at 0.7 / 1.0: bright-field 0.870 / 0.663
        (all points let background in), U2OS 0.893 / 0.913, MoNuSeg 0.746 at 0.8 against
        0.764 at 1.0 (its touching nuclei score low on confidence).
    seed_negatives : float, default=1.0
        Label-free: background points (at least a cell diameter from the cell cluster)
        per positive label of their image, as round 0's negative labels.
    psm_objective : {"contrastive", "invariance"}, default="contrastive"
        Label-free: self-supervised objective of the activation network (see
        :func:`pseudocell.core.psm.train_activation_net`).
    psm_iters : int, default=300
    psm_batch : int, default=16
    psm_crop : int, default=64
        Label-free: training steps, tiles per step and tile side (px) of the activation
        network; the training images must hold 16 such tiles.
    psm_lr : float, default=1e-3
    source_training : {"plain", "augment", "augment-round0", "dann"}, default="plain"
        Adapt: how each round's detector learns from the source images. ``augment``
        jitters every crop's intensity response (gamma, gain, offset, blur, noise);
        ``dann`` adds a domain classifier behind a gradient-reversal layer (the two
        baselines of the domain-adaptation benchmark). ``augment-round0`` jitters only
        round 0's (the source-only detector that gives the first target peaks); the
        curriculum rounds then train on plain crops.
    target_diameter : float or None, default=None ("auto")
        Adapt: cell diameter (px) in the target images. None estimates it without
        labels, starting from the source's (``cell_diameter``, measured at the source
        points by default): each domain is resized to the canonical cell size by its own
        factor. Give the source's diameter to resize both alike.
    grl_lambda : float, default=1.0
        Adapt (``dann``): scale of the gradient-reversal weight, which follows Ganin's
        schedule ``grl_lambda * (2 / (1 + exp(-10 p)) - 1)`` over training progress p.
    grl_level : int, default=-1
        Adapt (``dann``): the U-Net encoder level the domain classifier reads (0: the
        first block, -1: the bottleneck).
    adapt_schedule : tuple of float, default=(0.3, 0.6, 0.9)
        Adapt: the curriculum. Round k admits the most confident ``adapt_schedule[k]``
        of each target image's detections as positive labels (the last entry for later
        rounds); it must increase. U2OS → NIH3T3 (seed 0, 3 rounds, held-out F1 of the
        final detector; source-only 0.841): 0.905 with this schedule, 0.869 with 0.2,
        0.4, 0.6, whose first round (20 % admitted) fell to 0.775. Admitting per image
        rather than over all images (0.866 → 0.869 at 0.2-0.6) gives every image labels,
        also images whose cells all score low.
    uncertainty : {"tta", "mc-dropout"}, default="tta"
        Adapt: where a peak's confidence comes from: ``tta`` predicts the 8 flips and
        rotations of each target image, ``mc-dropout`` runs ``mc_passes`` passes with
        dropout on (needs ``detector_dropout`` > 0). See
        :func:`pseudocell.core.select.peak_confidence` for the score.
    mc_passes : int, default=8
        Adapt: stochastic passes T per target image (at most 8 for ``tta``).
    detector_dropout : float, default=0.0
        Adapt: channel dropout of the U-Net (bottleneck and decoder).
    adapt_min_confidence : float, default=0.0
        Adapt: the confidence cut; no peak below it is admitted, whatever the schedule.
    adapt_negatives : float, default=0.0 (off)
        Adapt: confidently empty target places (every pass low, far from every
        candidate) per admitted peak of their image, as negative labels. Off by
        default: at 2.0 the final detector's held-out F1 fell from 0.866 to 0.783 (U2OS
        → NIH3T3, seed 0, schedule 0.2-0.6): dim nuclei the source detector does not see
        count as empty, and the negatives taught the detector to miss them.
    precision : {"float32", "bfloat16"}, default="float32"
        Arithmetic of every prediction of the detector (the loop's predict, the adapt
        modes' uncertainty passes, review suggestions, ``pseudocell detect``):
        ``bfloat16`` runs the forward pass under autocast — for GPUs and CPUs with
        bfloat16 units (1.53x the network's speed on an AVX-512-bf16 CPU, F1 within
        0.001); CPUs without them emulate it and are slower. Training stays in float32.
        Left out of the config hash while it is the default.
    device : str, default="auto"
        ``auto`` uses CUDA when present, else CPU. Not part of the config hash.
    num_threads : int or None, default=None
        torch CPU threads; None leaves torch's default. Not part of the config hash, but
        not bit-neutral: another thread count rounds float sums differently, so results
        match bit for bit only at the same count.
    """

    mode: str = DEFAULT_MODE
    seed: int = 0
    rounds: int = 2
    cell_diameter: float | None = None
    background_ratio: float = 0.0
    background_level: float = 0.4
    # targets / masks (px at the canonical cell size)
    sigma: float = 6.0
    mask_radius: float = 12.0
    # detector
    unet_widths: tuple[int, ...] = (8, 16, 32, 64)
    detector_iters: int = 500
    detector_batch: int = 8
    detector_crop: int = 128
    detector_lr: float = 1e-3
    detector_head_init: str | None = None
    detector_warm_start: bool | None = None
    # peaks / patches
    peak_mode: str = "absolute"
    peak_threshold: float | None = None
    peak_recall: float = 0.9
    unlabeled_ratio: float = 0.5
    peak_min_distance: int = 6
    patch_size: int = 27
    # PU learner
    pu_prior: float | None = None
    pu_prior_estimate: str = "elkan-noto"
    pu_epochs: int = 20
    pu_lr: float = 1e-3
    pu_weight_decay: float = 5e-3
    pu_batch: int = 512
    pu_feature_dim: int = 128
    # ranker / selection
    p: float = 4.0
    lam: float = 0.1
    neg_ranker: str = "flip"
    neg_peak_quantile: float = 0.5
    provisional_top: float = 0.2
    alpha: float = 0.05
    beta: float = 0.05
    pu_agree: bool = True
    neg_cap: float | None = None
    peak_rank_weight: float | None = None
    # evaluation
    radius: float = 15.0
    extra_radii: tuple[float, ...] = ()
    collapse_ratio: float = 0.5
    # execution
    fusion_beta: float = 1.0
    kmeans_k: int = 3
    polarity: str = "auto"
    seed_fraction: float = 0.7
    seed_negatives: float = 1.0
    psm_objective: str = "contrastive"
    psm_iters: int = 300
    psm_batch: int = 16
    psm_crop: int = 64
    psm_lr: float = 1e-3
    # domain adaptation (modes adapt, adapt-ranker)
    source_training: str = "plain"
    target_diameter: float | None = None
    grl_lambda: float = 1.0
    grl_level: int = -1
    adapt_schedule: tuple[float, ...] = (0.3, 0.6, 0.9)
    uncertainty: str = "tta"
    mc_passes: int = 8
    detector_dropout: float = 0.0
    adapt_min_confidence: float = 0.0
    adapt_negatives: float = 0.0
    precision: str = "float32"

    device: str = "auto"
    num_threads: int | None = None

    def __post_init__(self) -> None:
        for name in AUTO_FIELDS:  # "auto" in TOML / on the CLI means None
            v = getattr(self, name)
            if isinstance(v, str) and v.strip().lower() == "auto":
                object.__setattr__(self, name, None)
        for name in ("unet_widths", "extra_radii", "adapt_schedule"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self._type_errors():  # ints given for float fields hash like floats
            for f in fields(self):
                v = getattr(self, f.name)
                if str(f.type).startswith("float") and isinstance(v, int):
                    object.__setattr__(self, f.name, float(v))
                elif str(f.type) == "tuple[float, ...]":
                    object.__setattr__(self, f.name, tuple(float(x) for x in v))
        problems = self.invalid_fields()
        if problems:
            raise InvalidConfigError(
                "invalid config: " + "; ".join(problems) + ". Fix these fields in the config "
                "file or on the command line."
            )

    # -- validation -------------------------------------------------------------------
    def invalid_fields(self) -> list[str]:
        """Return one message per invalid field (all of them, not just the first)."""
        bad = self._type_errors()
        if bad:  # range checks below assume the right types
            return bad

        def need(cond: bool, name: str, rule: str) -> None:
            if not cond:
                bad.append(f"{name!r} must be {rule}, got {getattr(self, name)!r}")

        for name in ("alpha", "beta"):
            v = getattr(self, name)
            need(isinstance(v, (int, float)) and 0.0 < v < 1.0, name, "in (0, 1)")
        if not bad and self.alpha + self.beta >= 1.0:
            bad.append(
                f"'alpha' + 'beta' must be < 1 (they select disjoint parts of U), got "
                f"{self.alpha} + {self.beta} = {self.alpha + self.beta}"
            )
        need(self.p > 0, "p", "> 0")
        need(self.lam >= 0, "lam", ">= 0")
        need(self.neg_ranker in ("flip", "provisional"), "neg_ranker", "'flip' or 'provisional'")
        need(0.0 < self.provisional_top < 1.0, "provisional_top", "in (0, 1)")
        need(0.0 < self.neg_peak_quantile <= 1.0, "neg_peak_quantile", "in (0, 1]")
        need(isinstance(self.rounds, int) and self.rounds >= 0, "rounds", "an integer >= 0")
        need(0 <= self.seed <= MAX_SEED, "seed", f"an integer in [0, {MAX_SEED}] (2**32 - 1)")
        need(self.cell_diameter is None or self.cell_diameter >= 2, "cell_diameter",
             "'auto' or a diameter in pixels >= 2")
        need(self.background_ratio >= 0, "background_ratio", ">= 0 (0: no background points)")
        need(0 < self.background_level <= 1, "background_level", "in (0, 1]")
        need(self.sigma > 0, "sigma", "> 0")
        need(self.mask_radius > 0, "mask_radius", "> 0")
        need(self.radius > 0, "radius", "> 0")
        need(0.0 <= self.collapse_ratio <= 1.0, "collapse_ratio", "in [0, 1]")
        need(all(r > 0 for r in self.extra_radii), "extra_radii", "all > 0")
        need(
            len(self.unet_widths) >= 2 and all(int(w) > 0 for w in self.unet_widths),
            "unet_widths", "at least two positive channel counts",
        )
        need(self.detector_iters > 0, "detector_iters", "> 0")
        need(self.detector_batch > 0, "detector_batch", "> 0")
        mult = 2 ** (len(self.unet_widths) - 1)
        need(
            self.detector_crop > 0 and self.detector_crop % mult == 0,
            "detector_crop", f"a positive multiple of {mult} (2**(levels-1))",
        )
        need(self.detector_lr > 0, "detector_lr", "> 0")
        need(self.detector_head_init in (None, "zero"), "detector_head_init",
             "None (PyTorch's default) or 'zero'")
        need(self.peak_mode in ("absolute", "reference"), "peak_mode", "'absolute' or 'reference'")
        need(self.peak_threshold is None or self.peak_threshold > 0, "peak_threshold",
             "None (calibrated) or > 0")
        need(0.0 < self.peak_recall <= 1.0, "peak_recall", "in (0, 1]")
        need(0.0 < self.unlabeled_ratio <= 1.0, "unlabeled_ratio", "in (0, 1]")
        need(self.peak_min_distance >= 1, "peak_min_distance", ">= 1")
        need(self.patch_size >= 3 and self.patch_size % 2 == 1, "patch_size", "odd and >= 3")
        need(self.pu_prior is None or 0.0 < self.pu_prior < 1.0, "pu_prior", "None or in (0, 1)")
        need(self.pu_prior_estimate in ("elkan-noto", "reference"), "pu_prior_estimate",
             "'elkan-noto' or 'reference'")
        need(self.neg_cap is None or 0.0 < self.neg_cap <= 1.0, "neg_cap", "None or in (0, 1]")
        need(self.neg_cap is None or (self.unlabeled_ratio < 1.0 and (
            self.peak_mode == "absolute" or self.peak_threshold is not None)), "neg_cap",
             "None unless candidates reach below the peak threshold (unlabeled_ratio < 1 "
             "and peak_mode='absolute' or a fixed peak_threshold)")
        need(self.peak_rank_weight is None or 0.0 <= self.peak_rank_weight <= 1.0,
             "peak_rank_weight", "None or in [0, 1]")
        need(self.pu_epochs > 0, "pu_epochs", "> 0")
        need(self.pu_lr > 0, "pu_lr", "> 0")
        need(self.pu_weight_decay >= 0, "pu_weight_decay", ">= 0")
        need(self.pu_batch > 0, "pu_batch", "> 0")
        need(self.pu_feature_dim > 0, "pu_feature_dim", "> 0")
        need(_DEVICE.fullmatch(self.device) is not None, "device", "'auto', 'cpu', 'cuda' or "
             "'cuda:N' (N = GPU index)")
        need(self.num_threads is None or self.num_threads > 0, "num_threads", "None or > 0")
        need(self.precision in PRECISIONS, "precision", " or ".join(map(repr, PRECISIONS)))
        need(bool(self.mode.strip()), "mode", "a mode name such as 'partial'")
        need(self.fusion_beta >= 0, "fusion_beta", ">= 0 (the raw image's weight in the "
             "fused image; 0: the activation map alone)")
        need(2 <= self.kmeans_k <= 8, "kmeans_k", "an integer in [2, 8]")
        need(self.polarity in ("auto", "bright", "dark"), "polarity",
             "'auto', 'bright' (cells brighter than background) or 'dark'")
        need(0.0 < self.seed_fraction <= 1.0, "seed_fraction", "in (0, 1]")
        need(self.seed_negatives >= 0, "seed_negatives", ">= 0")
        need(self.psm_objective in ("contrastive", "invariance"), "psm_objective",
             "'contrastive' or 'invariance'")
        need(self.psm_iters > 0, "psm_iters", "> 0")
        need(self.psm_batch > 0, "psm_batch", "> 0")
        need(self.psm_crop >= 16, "psm_crop", ">= 16")
        need(self.psm_lr > 0, "psm_lr", "> 0")
        need(self.source_training in SOURCE_TRAINING, "source_training",
             "'plain', 'augment' (intensity jitter), 'augment-round0' (jitter in round 0 "
             "only) or 'dann' (domain classifier with gradient reversal)")
        need(self.target_diameter is None or self.target_diameter >= 2, "target_diameter",
             "'auto' or a diameter in pixels >= 2")
        need(self.grl_lambda >= 0, "grl_lambda", ">= 0 (the gradient-reversal weight)")
        levels = len(self.unet_widths)
        need(-levels <= self.grl_level < levels, "grl_level",
             f"a U-Net encoder level in [{-levels}, {levels - 1}] (0: first block, -1: "
             "bottleneck)")
        q = self.adapt_schedule
        need(len(q) >= 1 and all(0.0 < x <= 1.0 for x in q)
             and all(a < b for a, b in zip(q, q[1:])), "adapt_schedule",
             "an increasing list of fractions in (0, 1], e.g. [0.2, 0.4, 0.6]")
        need(self.uncertainty in ("tta", "mc-dropout"), "uncertainty",
             "'tta' (flips and rotations) or 'mc-dropout'")
        need(1 <= self.mc_passes <= (8 if self.uncertainty == "tta" else 64), "mc_passes",
             "in [1, 8] for uncertainty='tta' (the 8 flips/rotations), [1, 64] for "
             "'mc-dropout'")
        need(0.0 <= self.detector_dropout < 1.0, "detector_dropout", "in [0, 1)")
        need(self.uncertainty != "mc-dropout" or self.detector_dropout > 0,
             "detector_dropout", "> 0 when uncertainty='mc-dropout' (no dropout, no MC "
             "passes; e.g. 0.2, or uncertainty='tta')")
        need(self.adapt_min_confidence >= 0, "adapt_min_confidence", ">= 0")
        need(self.adapt_negatives >= 0, "adapt_negatives", ">= 0")
        return bad

    def _type_errors(self) -> list[str]:
        """Fields whose value does not have the declared type (bool is no number here)."""
        bad = []
        for f in fields(self):
            v = getattr(self, f.name)
            t = str(f.type)
            if v is None and "None" in t:
                continue
            if t.startswith("tuple"):
                elem = float if "float" in t else int
                ok = isinstance(v, tuple) and all(_is_number(x, elem) for x in v)
            elif t.startswith("float"):
                ok = _is_number(v, float)
            elif t.startswith("int"):
                ok = _is_number(v, int)
            elif t.startswith("bool"):
                ok = isinstance(v, bool)
            else:
                ok = isinstance(v, str)
            if not ok:
                what = "a number or 'auto'" if f.name in AUTO_FIELDS else f"of type {t}"
                bad.append(f"{f.name!r} must be {what}, got {v!r} ({type(v).__name__})")
            elif "float" in t and v is not None and not all(
                    math.isfinite(x) for x in (v if isinstance(v, tuple) else (v,))):
                bad.append(f"{f.name!r} must be a finite number, got {v!r}")
        return bad

    # -- conversion -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON/TOML-safe dict (tuples become lists; None values are dropped)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        """Build from a dict; unknown keys are an error (a misspelt key is never ignored)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InvalidConfigError(
                f"unknown config key(s) {unknown}; valid keys are {sorted(known)}"
            )
        return cls(**d)

    def replace(self, **changes: Any) -> "Config":
        """Return a copy with ``changes`` applied (validated again)."""
        return self.from_dict({**self.to_dict(), **changes})

    @property
    def config_hash(self) -> str:
        """sha256 of the algorithmic fields: equal hashes mean the same computation, hence
        identical results on the same device with the same ``num_threads``."""
        return self._hash()

    def _hash(self, leave_out: frozenset[str] = frozenset()) -> str:
        d = {k: v for k, v in self.to_dict().items()
             if k not in NON_ALGORITHMIC_FIELDS | FINAL_ONLY_FIELDS | leave_out}
        mine = MODE_FIELDS.get(d["mode"], frozenset())
        others = set().union(*MODE_FIELDS.values()) - mine
        d = {k: v for k, v in d.items() if k not in others}
        if d["mode"] == DEFAULT_MODE:
            del d["mode"]
        for k, v in HASH_NEUTRAL.items():  # runs made before the field resume unchanged
            if k in d and d[k] == v:
                del d[k]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()

    @property
    def stage_hash(self) -> str:
        """The hash a stage's manifest records: :attr:`config_hash` without ``rounds``.
        No stage reads ``rounds`` (the engine only plans that many), so a run extended by
        ``pseudocell resume RUN --rounds +1`` keeps every finished stage; the run
        directory itself still tells configs apart by :attr:`config_hash`."""
        return self.replace(rounds=0).config_hash

    def stage_hash_without(self, ignored: frozenset[str]) -> str:
        """:attr:`stage_hash` over every field but ``ignored`` (fields a stage declares it
        never reads, :attr:`~pseudocell.stages.base.StageSpec.ignores`): two configs
        that differ only there give that stage equal outputs from equal inputs. With
        nothing ignored it is :attr:`stage_hash`.

        >>> Config(alpha=0.1).stage_hash_without(frozenset({"alpha"})) == \\
        ...     Config(alpha=0.2).stage_hash_without(frozenset({"alpha"}))
        True
        """
        return self.replace(rounds=0)._hash(frozenset(ignored))


def _is_number(v: Any, kind: type) -> bool:
    if isinstance(v, bool):
        return False
    return isinstance(v, int) if kind is int else isinstance(v, (int, float))


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read a TOML config file (flat keys, or all keys under a ``[pseudocell]`` table).

    ``overrides`` (e.g. CLI flags; None values ignored) replace file values *before*
    validation, so a flag can correct a bad value in the file.
    """
    data = read_config_dict(path)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return Config.from_dict(data)


def read_config_dict(path: str | Path) -> dict[str, Any]:
    """The raw key/value pairs of a TOML config file (not validated).

    The keys are either all at the top level or all in a ``[pseudocell]`` table; a file
    that mixes both is refused (the top-level keys would otherwise be dropped unseen).
    """
    from pseudocell.storage import fs  # URIs (s3://...) as well as local paths

    try:
        data = tomllib.loads(fs.read_bytes(str(path)).decode())
    except FileNotFoundError:
        raise InvalidConfigError(f"config file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise InvalidConfigError(f"config file {str(path)!r} is not valid TOML: {e}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidConfigError(f"config file {str(path)!r} cannot be read ({e}); pass a "
                                 "UTF-8 TOML file") from e
    if "pseudocell" in data and isinstance(data["pseudocell"], dict):
        outside = sorted(k for k in data if k != "pseudocell")
        if outside:
            raise InvalidConfigError(
                f"config file {str(path)!r} has key(s) {outside} outside its [pseudocell] "
                "table; move them under [pseudocell], or drop the [pseudocell] line and keep "
                "every key at the top")
        data = data["pseudocell"]
    return dict(data)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):  # a TOML basic string: quote, backslash and controls escaped
        return '"' + "".join(c if c not in '"\\' and 0x20 <= ord(c) != 0x7F
                             else f"\\u{ord(c):04x}" for c in v) + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dump_toml(cfg: Config) -> str:
    """Serialise ``cfg`` as flat TOML that :func:`load_config` reads back exactly."""
    return "".join(f"{k} = {_toml_value(v)}\n" for k, v in cfg.to_dict().items())


