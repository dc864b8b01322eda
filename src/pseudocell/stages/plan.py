"""Resolve a stage's declared inputs (:mod:`pseudocell.stages.base`) to store URIs of a run
directory: the one reading of "which store is input X of stage S in round r", shared by
the engine and the run reader."""
from __future__ import annotations

import re

from pseudocell.config import Config
from pseudocell.errors import RunDirectoryError, StageError
from pseudocell.stages.base import (HUMAN_STAGE, Human, Input, Labels, Mode, Output, Prepared,
                                    Ref, StageSpec)
from pseudocell.storage import fs
from pseudocell.storage.layout import RunLayout, join
from pseudocell.storage.manifest import read_manifest

__all__ = ["resolve", "stage_plan", "given_inputs", "runs", "human_round", "round_stages"]

_AFTER = re.compile(r"^after_(\d{3})/_manifest\.json$")

#: (URI, manifest path of its producer)
Source = tuple[str, str]


def given_inputs(layout: RunLayout) -> dict:
    """The run's input stores (name → manifest record; its ``uri`` as recorded, see
    :meth:`RunLayout.uri`)."""
    m = read_manifest(layout.inputs_manifest)
    if m is None:
        raise RunDirectoryError(f"{layout.root!r} has no inputs manifest; start it with "
                                "`pseudocell run`")
    return m["outputs"]


def human_round(layout: RunLayout, rnd: float) -> int | None:
    """The round whose merged reviews (:meth:`RunLayout.human_store`) apply to round
    ``rnd``: the latest review of a round before ``rnd``; None when no review applies."""
    found = [int(m.group(1)) for p in fs.list_files(layout.human)
             if (m := _AFTER.match(p))]
    before = [r for r in found if r < rnd]
    return max(before) if before else None


def round_stages(layout: RunLayout, mode: Mode, rnd: int, rounds: int) -> tuple[StageSpec, ...]:
    """The stages round ``rnd`` of a run of ``rounds`` rounds executes: the mode's
    (:meth:`Mode.stages_of`), after the review merge (:data:`HUMAN_STAGE`) when a person's
    review applies to the round."""
    stages = mode.stages_of(rnd, rounds)
    if human_round(layout, rnd) is None:
        return stages
    from pseudocell.stages.human import HUMAN_LABELS

    return (HUMAN_LABELS,) + stages


def resolve(layout: RunLayout, mode: Mode, rnd: int, ref: Ref, given: dict, *,
            required: bool = True) -> Source | None:
    """Where ``ref`` points in round ``rnd`` (a URI under this run's root, whatever
    root the manifest was written under); None when it is absent and not
    ``required`` (a missing required one raises :class:`StageError`)."""
    if isinstance(ref, Human):
        after = human_round(layout, rnd)
        if after is None:
            if required:
                raise StageError(f"round {rnd}: no review applies to it")
            return None
        path = join(layout.human_store(after), "_manifest.json")
        m = read_manifest(path)
        return layout.uri(m["outputs"][ref.name]["uri"]), path
    if isinstance(ref, Labels):
        if ref.reviewed and rnd > 0 and human_round(layout, rnd) is not None:
            ref = Output(HUMAN_STAGE, "points")
        elif rnd == 0:
            return resolve(layout, mode, 0, mode.initial_labels, given, required=required)
        else:
            ref = Output(mode.labels.stage, mode.labels.name, -1)
    if isinstance(ref, Input):
        if ref.store in given:
            return layout.uri(given[ref.store]["uri"]), layout.inputs_manifest
        if required:
            raise StageError(f"the run has no input {ref.store!r}")
        return None
    r = 0 if isinstance(ref, Prepared) else rnd + ref.offset
    path = layout.manifest(r, ref.stage)
    m = read_manifest(path) if r >= 0 else None
    if m is None:
        if required:
            raise StageError(f"round {r} stage {ref.stage!r} has no manifest but a later "
                             "stage needs it")
        return None
    if ref.name not in m["outputs"]:
        if required:
            raise StageError(f"round {r} stage {ref.stage!r} has no output {ref.name!r}")
        return None
    return layout.uri(m["outputs"][ref.name]["uri"]), path


def stage_plan(layout: RunLayout, mode: Mode, rnd: int, spec: StageSpec,
               given: dict | None = None, *, cfg: Config) -> dict[str, Source]:
    """Inputs of ``spec`` in round ``rnd`` of a run of config ``cfg``: name → (URI,
    manifest path of the producer). Optional inputs that are absent are left out, and so
    are its :attr:`~pseudocell.stages.base.StageSpec.gated` inputs whose config field is
    off in ``cfg``."""
    given = given_inputs(layout) if given is None else given
    plan = {}
    for key, ref in spec.inputs.items():
        if key in spec.gated and not getattr(cfg, spec.gated[key]):
            continue
        src = resolve(layout, mode, rnd, ref, given, required=key not in spec.optional)
        if src is not None:
            plan[key] = src
    return plan


def runs(spec: StageSpec, given: dict) -> bool:
    """Whether ``spec`` runs in a run with input stores ``given`` (its ``run_if_any``)."""
    return not spec.run_if_any or any(k in given for k in spec.run_if_any)
