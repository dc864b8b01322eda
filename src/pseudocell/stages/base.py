"""The stage contract and the pipeline declared as data.

A stage is a plain function ``(StageInputs, Config) -> StageOutputs`` that reads store
URIs and writes only inside ``inp.out_dir``. A :class:`StageSpec` says what the engine
needs to know about it: its kind (plain, training, sharded), the actor kind that runs it
on Ray, its declared inputs and when it runs. A :class:`Mode` is a pipeline: the stages
before round 0, the stages of each round and of the final round, where round 0's labels
come from and which stage outputs are the labels after a round. The engine, resume,
manifests, progress bars, MLflow journal, actor routing and the run reader are all
derived from these specs; no stage name is spelled anywhere else.
"""
from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from pseudocell.config import Config

__all__ = ["StageInputs", "StageOutputs", "ProgressFn", "stage_seed", "PLAIN", "TRAINING",
           "SHARDED", "KINDS", "Input", "Output", "Prepared", "Labels", "Human", "Ref",
           "HUMAN_STAGE", "ShardedStage", "StageSpec", "Mode"]

#: ``progress(done, total, value)``: training stages call it after every logging window
#: (detector: optimiser steps, value = mean loss) or epoch (PU: value = nnPU risk).
ProgressFn = Callable[[int, int, float], None]


@dataclass(frozen=True)
class StageInputs:
    """What a stage reads.

    Attributes
    ----------
    out_dir : str
        Fresh, empty directory the stage writes its outputs into.
    round : int
    seed : int
        Derived from (run seed, round, stage name) by :func:`stage_seed`.
    uris : dict[str, str]
        Named input stores (images, points, heatmaps, ...). Absent optional inputs are
        simply not in the dict.
    """

    out_dir: str
    round: int
    seed: int
    uris: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StageOutputs:
    """What a stage wrote (name → URI) and small JSON-safe metrics."""

    uris: dict[str, str]
    metrics: dict[str, Any] = field(default_factory=dict)


def stage_seed(run_seed: int, rnd: int, stage: str) -> int:
    """Deterministic 63-bit seed of one stage.

    >>> stage_seed(0, 1, "a") == stage_seed(0, 1, "a")
    True
    >>> stage_seed(0, 1, "a") != stage_seed(0, 2, "a")
    True
    """
    ss = np.random.SeedSequence([int(run_seed), int(rnd), zlib.crc32(stage.encode())])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


# -- declared inputs --------------------------------------------------------------------

@dataclass(frozen=True)
class Input:
    """A store of the run's inputs (``images``, ``points``, ``gt``, ``eval_images``,
    ``eval_gt``), written by ``prepare_run``."""

    store: str


@dataclass(frozen=True)
class Output:
    """Output ``name`` of stage ``stage`` of this round (``offset=0``) or of the previous
    round (``offset=-1``)."""

    stage: str
    name: str
    offset: int = 0


@dataclass(frozen=True)
class Prepared:
    """Output ``name`` of a ``before`` stage ``stage`` (they run once, in round 0), seen
    from any round."""

    stage: str
    name: str


@dataclass(frozen=True)
class Labels:
    """The labels a round works from: round 0's come from the mode's ``initial_labels``,
    a later round's are the mode's ``labels`` output of the round before.

    When a person's review applies to the round (a :class:`Human` store exists for it),
    they are the :data:`HUMAN_STAGE` stage's output instead: those labels with the
    review in force. ``reviewed=False`` names the labels before that merge (the input of
    the merge itself)."""

    reviewed: bool = True


@dataclass(frozen=True)
class Human:
    """Table ``name`` (``labels``: the person's points; ``tiles``: the tiles they
    reviewed) of the reviews that apply to this round: those ingested (``pseudocell
    ingest``) after an earlier round, the latest such store. Absent when there is
    none."""

    name: str


Ref = Input | Output | Prepared | Labels | Human

#: The stage that puts a person's review into a round's labels; it runs first in every
#: round that a review applies to (see :func:`pseudocell.stages.plan.round_stages`).
HUMAN_STAGE = "human_labels"

PLAIN, TRAINING, SHARDED = "plain", "training", "sharded"
KINDS = (PLAIN, TRAINING, SHARDED)


@dataclass(frozen=True)
class ShardedStage:
    """A stage split into plan (pre-size stores, list work items), shards (each writes
    whole chunks) and merge (small tables, outputs). Work items and shard results are
    small JSON-safe dicts."""

    plan: Callable[[StageInputs, Config, int], list[dict]]
    shard: Callable[..., dict]
    merge: Callable[[StageInputs, Config, list[dict]], StageOutputs]


@dataclass(frozen=True)
class StageSpec:
    """One stage of a mode, as data.

    Attributes
    ----------
    name : str
        Stage name: its folder ``round_NNN/<name>`` and its key in manifests, logs,
        MLflow and ``PSEUDOCELL_FAULT``.
    fn : callable
        ``fn(inp, cfg) -> StageOutputs`` runs the whole stage in this process; training
        stages also accept ``parallel=`` and ``progress=``.
    kind : {"plain", "training", "sharded"}
        ``training`` stages train a network (Ray Train may run them data-parallel and
        they report progress); ``sharded`` stages also have ``shards`` (plan / shard /
        merge) that an actor pool runs in parallel.
    actor : str
        The actor kind that runs it on Ray (one actor per kind; sharded stages: a pool).
    inputs : mapping of str to Ref
        Input name (key of ``StageInputs.uris``) → where it comes from.
    optional : frozenset of str
        Inputs that may be absent (e.g. held-out images); the others must resolve.
    gated : mapping of str to str
        Optional inputs planned only when a config field is true (input name → field,
        e.g. the previous round's model → ``detector_warm_start``): with the field off
        the stage's inputs, manifests and results are those of a stage without them.
    run_if_any : tuple of str
        Run the stage only when the run has at least one of these input stores (e.g.
        evaluation only with ground truth); empty: always.
    uses_gpu : bool
        Whether its actor gets a GPU when the cluster has them.
    progress_unit : str
        What a training stage's progress counts ("steps", "epochs").
    series : mapping of str to (str, str or None)
        Per-step metric lists it returns → (MLflow name, metric holding their steps or
        None for 1, 2, ...).
    journal_scalars : bool
        Journal its scalar metrics as ``<stage>/<metric>`` (False when they are already
        part of the round's row).
    row : mapping of str to str, or "*"
        Metrics that go into the round's row of ``metrics.json`` (metric → column); "*"
        takes every metric, P/R/F dicts flattened as ``key/precision`` ...
    artifacts : tuple of str
        Outputs (files or folders, e.g. pictures of what the stage saw) that the MLflow
        record of its round keeps as artefacts, under the stage's name.
    ignores : frozenset of str
        Config fields the stage never reads (nor does anything it calls), e.g. the
        selection settings for the detector's stages. Runs whose configs differ only in
        these fields may share the stage's outputs when its inputs are equal (a Tune
        sweep's trials, :mod:`pseudocell.orchestrator.share`); manifests and resume
        still use the whole :attr:`~pseudocell.config.Config.stage_hash`. Declaring a
        field that the stage does read makes sharing wrong: the tests record every
        field each stage reads.
    """

    name: str
    fn: Callable[..., StageOutputs]
    actor: str
    kind: str = PLAIN
    inputs: Mapping[str, Ref] = field(default_factory=dict)
    optional: frozenset[str] = frozenset()
    gated: Mapping[str, str] = field(default_factory=dict)
    run_if_any: tuple[str, ...] = ()
    shards: ShardedStage | None = None
    uses_gpu: bool = True
    progress_unit: str = "steps"
    series: Mapping[str, tuple[str, str | None]] = field(default_factory=dict)
    journal_scalars: bool = True
    row: Mapping[str, str] | str = field(default_factory=dict)
    artifacts: tuple[str, ...] = ()
    ignores: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        known = {f.name for f in fields(Config)} - {"mode", "seed"}
        if not set(self.ignores) <= known:
            raise ValueError(f"stage {self.name!r}: ignores {sorted(set(self.ignores) - known)}"
                             " are not config fields a stage may ignore")
        if self.kind not in KINDS:
            raise ValueError(f"stage {self.name!r}: kind {self.kind!r} is not one of {KINDS}")
        if (self.kind == SHARDED) != (self.shards is not None):
            raise ValueError(f"stage {self.name!r}: a sharded stage (and only one) needs "
                             "shards=ShardedStage(plan, shard, merge)")
        unknown = set(self.optional) - set(self.inputs)
        if unknown:
            raise ValueError(f"stage {self.name!r}: optional inputs {sorted(unknown)} are "
                             "not declared inputs")
        if not set(self.gated) <= set(self.optional):
            raise ValueError(f"stage {self.name!r}: gated inputs "
                             f"{sorted(set(self.gated) - set(self.optional))} must be optional")
        if not set(self.gated.values()) <= known:
            raise ValueError(f"stage {self.name!r}: gated by {sorted(self.gated.values())}, "
                             "which are not all config fields")

    def call(self, inp: StageInputs, cfg: Config,
             progress: ProgressFn | None = None) -> StageOutputs:
        """Run the whole stage in this process (training stages report ``progress``)."""
        if self.kind == TRAINING and progress is not None:
            return self.fn(inp, cfg, progress=progress)
        return self.fn(inp, cfg)


@dataclass(frozen=True)
class Mode:
    """A pipeline declared as data.

    Attributes
    ----------
    name : str
        The config's ``mode``.
    round_stages : tuple of StageSpec
        Stages of each pseudo-labelling round ``0 .. rounds - 1``.
    final_stages : tuple of StageSpec
        Stages of round ``rounds`` (the final detector).
    initial_labels : Input or Output
        Where round 0's labels come from: a run input (the clicked points) or an output
        of a ``before`` stage (e.g. bootstrap points).
    labels : Output
        The output that holds the labels after a round (its ``offset`` must be 0).
    before : tuple of StageSpec
        Stages run once before round 0 (in round 0's folder).
    products : mapping of str to Output
        What a run's reader answers: ``model``, ``detections``, ``heldout_detections``
        → the stage output that holds it in a round.
    required_inputs : tuple of str
        Run input stores the mode cannot run without.
    check_inputs : callable or None
        ``check_inputs(cfg, inputs)`` refuses run inputs this mode cannot work from
        (raises :class:`~pseudocell.errors.InvalidInputError`) before anything is
        written; it lives in :mod:`pseudocell.validation`.
    """

    name: str
    round_stages: tuple[StageSpec, ...]
    final_stages: tuple[StageSpec, ...]
    initial_labels: Input | Output | Prepared
    labels: Output
    products: Mapping[str, Output | Prepared]
    before: tuple[StageSpec, ...] = ()
    required_inputs: tuple[str, ...] = ("images",)
    check_inputs: Callable[[Config, Any], None] | None = None

    def __post_init__(self) -> None:
        names = [s.name for s in self.before + self.round_stages]
        if len(set(names)) != len(names):
            raise ValueError(f"mode {self.name!r}: stage names repeat within a round: {names}")
        for ref in (self.labels, *self.products.values()):
            if isinstance(ref, Output) and ref.offset != 0:
                raise ValueError(f"mode {self.name!r}: {ref} must name this round's output")

    def stages_of(self, rnd: int, rounds: int) -> tuple[StageSpec, ...]:
        """The stages of round ``rnd`` of a run of ``rounds`` rounds, in order."""
        head = self.before if rnd == 0 else ()
        return head + (self.round_stages if rnd < rounds else self.final_stages)

    @property
    def all_stages(self) -> tuple[StageSpec, ...]:
        return self.before + self.round_stages + self.final_stages

    @property
    def actor_kinds(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.actor for s in self.all_stages))
