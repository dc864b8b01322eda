"""One reader of a run's results: labels, detections, model and metrics of any round.

Every consumer (finalize, export, reports, tracking, benchmarks, the CLI summary) asks
this object instead of reading manifests itself; what "the model of round r" is comes
from the run's mode (:attr:`~pseudocell.stages.base.Mode.products`).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from pseudocell.config import Config, load_config
from pseudocell.core.metrics import near_any
from pseudocell.data.points import ROUND0_POSITIVE, points_by_image
from pseudocell.errors import RunDirectoryError
from pseudocell.stages.base import Labels, Mode, Output
from pseudocell.stages.modes import get_mode
from pseudocell.stages.plan import given_inputs, resolve, round_stages
from pseudocell.storage import arrays, fs, tables
from pseudocell.storage.layout import RunLayout
from pseudocell.storage.manifest import read_manifest

__all__ = ["RunResults"]


@dataclass(frozen=True)
class RunResults:
    """Results of the run in ``layout`` made with ``cfg``.

    >>> res = RunResults.open("runs/demo")          # doctest: +SKIP
    >>> res.detections(res.rounds)["y"].shape       # doctest: +SKIP
    """

    layout: RunLayout
    cfg: Config

    @classmethod
    def open(cls, run_dir: str | Path) -> "RunResults":
        """The results of an existing run directory (a path or an object-store URI)."""
        layout = RunLayout(fs.resolve_root(run_dir))
        if not fs.exists(layout.config):
            raise RunDirectoryError(f"{str(run_dir)!r} is not a pseudocell run (no "
                                    "config.toml); start one with `pseudocell run`")
        return cls(layout, load_config(layout.config))

    @property
    def mode(self) -> Mode:
        return get_mode(self.cfg.mode)

    @property
    def rounds(self) -> int:
        """The last round (the final detector's)."""
        return self.cfg.rounds

    @cached_property
    def image_ids(self) -> list[str]:
        return arrays.stack_ids(self.layout.images)

    @cached_property
    def _given(self) -> dict:
        return given_inputs(self.layout)

    def has_input(self, store: str) -> bool:
        return store in self._given

    def store_uri(self, rnd: int, ref) -> str | None:
        """Where the store ``ref`` (a declared input: ``Output``, ``Prepared``,
        ``Labels`` ...) of round ``rnd`` is; None when it does not exist (yet)."""
        src = resolve(self.layout, self.mode, rnd, ref, self._given, required=False)
        return None if src is None else src[0]

    def _table(self, uri: str | None) -> dict[str, np.ndarray] | None:
        return None if uri is None else tables.read_table(uri)

    def manifest(self, rnd: int, stage: str) -> dict | None:
        return read_manifest(self.layout.manifest(rnd, stage))

    # -- what a round holds ------------------------------------------------------------
    def stage_artifacts(self, rnd: int) -> list[tuple[str, str]]:
        """``(stage name, URI)`` of every output round ``rnd``'s stages declare as
        ``artifacts`` and have written."""
        out = []
        for spec in round_stages(self.layout, self.mode, rnd, self.rounds):
            for name in spec.artifacts:
                uri = self.store_uri(rnd, Output(spec.name, name))
                if uri is not None:
                    out.append((spec.name, uri))
        return out

    def training_labels(self, rnd: int) -> dict[str, np.ndarray] | None:
        """The labels table (image_id, y, x, kind, round, score) round ``rnd``'s detector
        was trained on; None when they do not exist yet."""
        return self._table(self.store_uri(rnd, Labels()))

    def labels(self, rnd: int) -> dict[str, np.ndarray] | None:
        """The labels after round ``rnd``: those it trained on plus what it selected (the
        last round selects none); None when the round has not started training."""
        uri = self.store_uri(rnd, self.mode.labels)
        if uri is None:
            if self.model_uri(rnd) is None:
                return None
            uri = self.store_uri(rnd, Labels())
        return self._table(uri)

    def detections(self, rnd: int, *, heldout: bool = False) -> dict[str, np.ndarray] | None:
        """Peaks table (image_id, y, x, value) of round ``rnd``'s detector on the training
        (or held-out) images; None when they do not exist."""
        key = "heldout_detections" if heldout else "detections"
        return self._table(self.store_uri(rnd, self.mode.products[key]))

    def model_uri(self, rnd: int) -> str | None:
        """URI of round ``rnd``'s detector weights (``model.pt``), None if not trained."""
        return self.store_uri(rnd, self.mode.products["model"])

    def annotated_recall(self, rnd: int) -> float | None:
        """Share of round 0's annotated points (the clicks, or a mode's seed points)
        that round ``rnd``'s detector finds within ``mask_radius`` on the training
        images; None when there are no such points or no detections yet. Uses only the
        labels the run was given, never evaluation data."""
        seeds, det = self.training_labels(0), self.detections(rnd)
        if seeds is None or det is None:
            return None
        ids = self.image_ids
        pts = points_by_image(seeds, ids, ROUND0_POSITIVE)
        found = points_by_image(det, ids)
        n = sum(len(pts[i]) for i in ids)
        if n == 0:
            return None
        near = self.cfg.mask_radius / self.scale()  # canonical px -> original px
        hit = sum(int(near_any(pts[i], found[i], near).sum()) for i in ids)
        return hit / n

    def scale_info(self):
        """The run's :class:`~pseudocell.stages.scale.ScaleInfo` (cell diameter, resize
        factor); None for a mode without a ``scale`` product or before it ran."""
        if "scale" not in self.mode.products:
            return None
        from pseudocell.stages.scale import read_scale

        uri = self.store_uri(0, self.mode.products["scale"])
        return None if uri is None else read_scale(uri)

    def scale(self) -> float:
        """The run's image resize factor (1.0 without a :meth:`scale_info`)."""
        info = self.scale_info()
        return 1.0 if info is None else info.scale

    def round_row(self, rnd: int) -> dict:
        """The flat metrics row of round ``rnd``: what each stage declares in its
        ``row`` (evaluation P/R/F as ``train@15/f1`` ..., pseudo-labels added, label
        counts)."""
        row: dict = {"round": rnd}
        # latest stage first: the evaluation columns lead, as in every metrics.json so far
        for spec in reversed(round_stages(self.layout, self.mode, rnd, self.rounds)):
            m = self.manifest(rnd, spec.name)
            if m is None:
                continue
            metrics = m.get("metrics") or {}
            if spec.row == "*":
                for key, val in metrics.items():
                    if isinstance(val, dict):
                        for part in ("precision", "recall", "f1"):
                            row[f"{key}/{part}"] = val[part]
                    elif key != "round":
                        row[key] = val
            else:
                row.update({col: metrics[k] for k, col in spec.row.items() if k in metrics})
        recall = self.annotated_recall(rnd) if row.keys() - {"round"} else None
        if recall is not None:
            row["annotated_recall"] = recall
        return row

    def rows(self) -> list[dict]:
        """:meth:`round_row` of every round ``0 .. rounds``."""
        return [self.round_row(r) for r in range(self.rounds + 1)]
