"""``pseudocell ingest``: a person's corrections back into the run.

Reads a review folder (:mod:`pseudocell.human.files`), turns every point into a label
(``added`` → ``human_added``, ``confirmed`` → ``human_confirmed``, ``rejected`` →
``human_rejected``; ``proposed`` points count as confirmed in a tile marked reviewed and
are ignored elsewhere) and writes:

* ``RUN/human/reviews/round_NNN/{labels,tiles}.parquet``: this review, as read (a second
  ingest of the same folder replaces it: ingest is idempotent);
* ``RUN/human/after_MMM/`` for every reviewed round MMM >= NNN: every review of rounds
  <= MMM merged, with a manifest. Round MMM + 1 and later start from it
  (:mod:`pseudocell.stages.human`); a store whose content did not change is not
  rewritten, so stages that already used it stay finished.

Nothing is written before the whole folder has been read and checked.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pseudocell.core.review import review_counts
from pseudocell.errors import InvalidInputError
from pseudocell.human.files import (Tile, read_geojson_tile, read_manifest_csv,
                                    read_napari_points, read_review_json, sha256_file)
from pseudocell.human.suggest import model_id, run_id
from pseudocell.results.reader import RunResults
from pseudocell.storage import fs, tables
from pseudocell.storage.layout import join
from pseudocell.storage.manifest import checksum, read_manifest, write_manifest

__all__ = ["IngestReport", "ingest", "read_review"]

logger = logging.getLogger(__name__)

_KIND = {"added": "human_added", "confirmed": "human_confirmed", "rejected": "human_rejected"}
_FORMATS = ("auto", "napari", "geojson")


@dataclass(frozen=True)
class IngestReport:
    """What an ingest did."""

    round: int
    n_tiles: int
    n_reviewed: int
    counts: dict
    audit: dict
    stores: list[str]


def _pick_format(folder: Path, record: dict, fmt: str) -> str:
    if fmt not in _FORMATS:
        raise InvalidInputError(f"--format {fmt!r}: use one of {_FORMATS}")
    if fmt != "auto":
        return fmt
    edited = {"napari": False, "geojson": False}
    for rel, sha in (record.get("files") or {}).items():
        if not rel.startswith("points/"):
            continue
        p = folder / rel
        changed = not p.exists() or sha256_file(p) != sha
        edited["napari" if rel.endswith(".csv") else "geojson"] |= changed
    new = [p for p in (folder / "points").glob("*")
           if f"points/{p.name}" not in (record.get("files") or {})]
    for p in new:
        edited["napari" if p.suffix == ".csv" else "geojson"] = True
    if edited["napari"] and edited["geojson"]:
        raise InvalidInputError(f"{str(folder)!r}: both the napari CSVs and the GeoJSON files "
                                "were edited; say which to read with --format napari or "
                                "--format geojson")
    return "geojson" if edited["geojson"] else "napari"


def read_review(folder: str | Path, fmt: str = "auto") -> tuple[dict, list[Tile], dict, dict]:
    """Read and check a review folder.

    Returns ``(record, tiles, labels, tile_table)``: the ``review.json`` record, the
    tiles of ``manifest.csv``, the labels table (image_id, y, x, kind, round, score,
    tile_id; full-image pixels) and the tile table (tile_id, image_id, y0, x0, h, w,
    round, reviewed, audit, tp, fp, fn).
    """
    folder = Path(folder)
    record = read_review_json(folder)
    tiles = read_manifest_csv(folder / "manifest.csv")
    written = {Path(f).stem for f in record.get("files", {}) if f.startswith("points/")}
    by_id = {t.tile_id: t for t in tiles}
    unknown = sorted(set(by_id) - written)
    if unknown:
        raise InvalidInputError(f"{str(folder / 'manifest.csv')!r} names tiles {unknown} that "
                                "`pseudocell suggest` did not suggest; delete those rows")
    fmt = _pick_format(folder, record, fmt)
    ext = ".csv" if fmt == "napari" else ".geojson"
    for p in sorted((folder / "points").glob(f"*{ext}")):
        if p.stem not in by_id:
            raise InvalidInputError(f"{str(p)!r} names tile {p.stem!r}, which is not in "
                                    "manifest.csv; rename it after its tile or delete it")
    rnd = int(record["round"])
    audit_ids = {t.tile_id for t in tiles if t.reason == "audit"}
    cols: dict[str, list] = {"image_id": [], "y": [], "x": [], "kind": [], "tile_id": []}
    tcols: dict[str, list] = {k: [] for k in ("tile_id", "image_id", "y0", "x0", "h", "w",
                                              "reviewed", "audit", "tp", "fp", "fn")}
    for t in tiles:
        p = folder / "points" / f"{t.tile_id}{ext}"
        if p.exists():
            yx, st = (read_napari_points if fmt == "napari" else read_geojson_tile)(p, t)
        else:
            yx, st = np.zeros((0, 2)), np.zeros(0, object)
        st = st.astype(str)
        if t.reviewed:
            st = np.where(st == "proposed", "confirmed", st)
        use = st != "proposed"
        cols["image_id"] += [t.image] * int(use.sum())
        cols["y"] += yx[use, 0].tolist()
        cols["x"] += yx[use, 1].tolist()
        cols["kind"] += [_KIND[s] for s in st[use]]
        cols["tile_id"] += [t.tile_id] * int(use.sum())
        c = review_counts(st) if t.reviewed else {"tp": 0, "fp": 0, "fn": 0}
        for k, v in (("tile_id", t.tile_id), ("image_id", t.image), ("y0", t.y0),
                     ("x0", t.x0), ("h", t.h), ("w", t.w), ("reviewed", t.reviewed),
                     ("audit", t.tile_id in audit_ids), *c.items()):
            tcols[k].append(v)
    n = len(cols["y"])
    labels = {"image_id": np.array(cols["image_id"], object),
              "y": np.array(cols["y"], np.float64), "x": np.array(cols["x"], np.float64),
              "kind": np.array(cols["kind"], object), "round": np.full(n, rnd, np.int64),
              "score": np.full(n, np.nan), "tile_id": np.array(cols["tile_id"], object)}
    ttab = {"tile_id": np.array(tcols["tile_id"], object),
            "image_id": np.array(tcols["image_id"], object),
            **{k: np.array(tcols[k], np.int64) for k in ("y0", "x0", "h", "w", "tp", "fp",
                                                          "fn")},
            "round": np.full(len(tiles), rnd, np.int64),
            "reviewed": np.array(tcols["reviewed"], bool),
            "audit": np.array(tcols["audit"], bool)}
    return record, tiles, labels, ttab


def _digest(table: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(table):
        h.update(k.encode() + b"\0" + json.dumps(np.asarray(table[k]).tolist()).encode())
    return h.hexdigest()


def _rebuild(res: RunResults) -> list[str]:
    """Rewrite every merged store ``human/after_MMM`` whose content changed."""
    root = join(res.layout.human, "reviews")
    rounds = sorted({int(p.split("/")[0][len("round_"):]) for p in fs.list_files(root)
                     if p.endswith("review.json")})
    read = {r: {name: tables.read_table(join(res.layout.human_review(r), f"{name}.parquet"))
                for name in ("labels", "tiles")} for r in rounds}  # each review once
    written = []
    for after in rounds:
        parts = [res.layout.human_review(r) for r in rounds if r <= after]
        lab = tables.concat_tables(*[read[r]["labels"] for r in rounds if r <= after])
        til = tables.concat_tables(*[read[r]["tiles"] for r in rounds if r <= after])
        store = res.layout.human_store(after)
        mpath = join(store, "_manifest.json")
        digest = {"labels": _digest(lab), "tiles": _digest(til)}
        old = read_manifest(mpath)
        if old is not None and old.get("content") == digest:
            continue
        fs.remove(store)
        fs.makedirs(store)
        outs = {"labels": join(store, "labels.parquet"), "tiles": join(store, "tiles.parquet")}
        tables.write_table(outs["labels"], lab)
        tables.write_table(outs["tiles"], til)
        write_manifest(mpath, {"stage": "human", "round": after, "content": digest,
                               "reviews": [res.layout.record(p) for p in parts],
                               "outputs": {k: {"uri": res.layout.record(u),
                                               "sha256": checksum(u)}
                                           for k, u in outs.items()}})
        written.append(store)
    return written


def ingest(run_dir: str | Path, folder: str | Path, *, fmt: str = "auto") -> IngestReport:
    """Ingest review ``folder`` into the run at ``run_dir`` (see the module docstring).

    Raises :class:`InvalidInputError` for a folder of another run, unknown tiles,
    points outside their tile or unknown statuses (nothing written); a folder made by
    another detector of this run (the round was re-run since) is taken with a warning.
    """
    res = RunResults.open(run_dir)
    folder = Path(folder)
    if not folder.is_absolute() and not folder.exists() and res.layout.is_local:
        folder = Path(res.layout.root) / folder  # RUN-relative: review/round_002
    record, tiles, labels, ttab = read_review(folder, fmt)
    if record.get("run_id") != run_id(res):
        raise InvalidInputError(
            f"{str(folder)!r} was suggested from another run (run id {record.get('run_id')}; "
            f"{res.layout.root!r} is {run_id(res)}); ingest it into the run it came from")
    rnd = int(record["round"])
    if rnd > res.rounds or res.model_uri(rnd) is None:
        raise InvalidInputError(f"{str(folder)!r} reviews round {rnd}, which "
                                f"{res.layout.root!r} has not trained")
    if record.get("model_run_id") != model_id(res, rnd):
        logger.warning("%s was suggested from another detector of round %d (model %s, now "
                       "%s): the round was re-run since; its corrections are taken as they "
                       "are", folder, rnd, record.get("model_run_id"), model_id(res, rnd))
    known = set(res.image_ids)
    bad = sorted({t.image for t in tiles} - known)
    if bad:
        raise InvalidInputError(f"{str(folder)!r} names images {bad} that the run does not "
                                "have")
    dest = res.layout.human_review(rnd)
    fs.remove(dest)
    fs.makedirs(dest)
    tables.write_table(join(dest, "labels.parquet"), labels)
    tables.write_table(join(dest, "tiles.parquet"), ttab)
    fs.write_bytes(join(dest, "review.json"), json.dumps(
        {**record, "folder": str(folder.resolve())}, indent=1, sort_keys=True).encode())
    stores = _rebuild(res)
    kinds = labels["kind"].astype(str)
    counts = {k: int((kinds == k).sum()) for k in _KIND.values()}
    sel = ttab["reviewed"] & ttab["audit"]
    audit = {k: int(ttab[k][sel].sum()) for k in ("tp", "fp", "fn")}
    rep = IngestReport(rnd, len(tiles), int(ttab["reviewed"].sum()), counts, audit, stores)
    logger.info("ingest round=%d tiles=%d reviewed=%d %s audit=%s stores=%s", rnd,
                rep.n_tiles, rep.n_reviewed, counts, audit, stores)
    return rep
