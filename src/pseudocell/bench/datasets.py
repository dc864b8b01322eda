"""Benchmark datasets declared as data (TOML or ``key=value`` strings), never as code.

A dataset is a folder of images plus full ground truth given as

* ``gt = "dots"``: one dot image per image (non-zero pixels are centres),
* ``gt = "labels"``: one instance label image per image (centroid per label),
* ``gt = "<path>.csv"``: a points CSV (``image,y,x`` or napari),

with the ground-truth file name derived from the image name by ``gt_replace``
(``["cells", "dots"]`` maps ``001cells.png`` to ``001dots.png``). The split comes from a
CSV (``image,split`` with split ∈ {train, test}) or, without one, a ``test_fraction`` of
the images: drawn at random with ``split_seed``, or the last ones in name order when no
seed is given. ``tiles = k`` cuts every
image into k × k tiles first (for sets of one or a few large images).

Example TOML::

    [[dataset]]
    name = "dsb2018-one-image"
    images = "../shared/data/stardist-dsb2018-2d"
    pattern = "img*.tif"
    gt = "labels"
    gt_replace = ["img", "mask"]
    tiles = 2
    test_fraction = 0.25
    radius = 8.0
"""
from __future__ import annotations

import csv
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from pseudocell.data.images import image_id, list_images, points_from_dots, points_from_labels, read_raw
from pseudocell.errors import InvalidConfigError, InvalidInputError
from pseudocell.validation import ImageSet, check_image, load_points

__all__ = ["DatasetSpec", "Dataset", "load_dataset", "read_dataset_toml", "parse_dataset_arg",
           "default_datasets"]


@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    """Where a benchmark dataset lives and how to read its ground truth and split."""

    name: str
    images: str
    pattern: str = "*"
    gt: str = "dots"
    gt_replace: tuple[str, str] | None = None
    split: str | None = None
    test_fraction: float = 0.2
    split_seed: int | None = None
    tiles: int = 1
    radius: float = 15.0

    def __post_init__(self) -> None:
        if isinstance(self.gt_replace, list):
            object.__setattr__(self, "gt_replace", tuple(self.gt_replace))
        bad = []
        if self.gt not in ("dots", "labels") and not self.gt.endswith(".csv"):
            bad.append(f"gt must be 'dots', 'labels' or a .csv path, got {self.gt!r}")
        if self.gt in ("dots", "labels") and (self.gt_replace is None or len(self.gt_replace) != 2):
            bad.append("gt_replace = [from, to] is needed to find the ground-truth image of "
                       "each image")
        if not 0.0 < self.test_fraction < 1.0:
            bad.append(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.tiles < 1:
            bad.append(f"tiles must be >= 1, got {self.tiles}")
        if self.radius <= 0:
            bad.append(f"radius must be > 0, got {self.radius}")
        if bad:
            raise InvalidConfigError(f"dataset {self.name!r}: " + "; ".join(bad))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DatasetSpec":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InvalidConfigError(f"dataset {d.get('name')!r}: unknown key(s) {unknown}; "
                                     f"valid keys are {sorted(known)}")
        if "name" not in d or "images" not in d:
            raise InvalidConfigError(f"dataset {d!r}: 'name' and 'images' are required")
        return cls(**d)


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset: training and test images with full ground truth tables."""

    spec: DatasetSpec
    train: ImageSet
    train_gt: dict[str, np.ndarray]
    test: ImageSet
    test_gt: dict[str, np.ndarray]


def _table(rows: list[tuple[str, float, float]]) -> dict[str, np.ndarray]:
    return {"image_id": np.array([r[0] for r in rows], object),
            "y": np.array([r[1] for r in rows], np.float64).reshape(-1),
            "x": np.array([r[2] for r in rows], np.float64).reshape(-1)}


def _tile(ids, images, pts_by_id, k):
    """Cut each image into k x k tiles; points move with their tile."""
    out_ids, out_imgs, rows = [], [], []
    for i, im in zip(ids, images):
        H, W = im.shape
        ys, xs = np.linspace(0, H, k + 1).astype(int), np.linspace(0, W, k + 1).astype(int)
        for a in range(k):
            for b in range(k):
                tid = f"{i}_t{a}{b}"
                out_ids.append(tid)
                out_imgs.append(im[ys[a]:ys[a + 1], xs[b]:xs[b + 1]])
                p = pts_by_id.get(i, np.zeros((0, 2)))
                m = (p[:, 0] >= ys[a]) & (p[:, 0] < ys[a + 1]) & (p[:, 1] >= xs[b]) & \
                    (p[:, 1] < xs[b + 1])
                rows += [(tid, y - ys[a], x - xs[b]) for y, x in p[m]]
    return out_ids, out_imgs, rows


def load_dataset(spec: DatasetSpec) -> Dataset:
    """Read images, ground truth and split of ``spec`` (validated as user inputs)."""
    folder = Path(spec.images)
    paths = [Path(p) for p in list_images(folder, spec.pattern)]
    if not paths:
        raise InvalidInputError(f"dataset {spec.name!r}: no image matches {spec.pattern!r} in "
                                f"{str(folder)!r}")
    ids = [image_id(p) for p in paths]
    images = [check_image(read_raw(p), name=repr(str(p))) for p in paths]
    pts: dict[str, np.ndarray] = {}
    if spec.gt in ("dots", "labels"):
        frm, to = spec.gt_replace
        for i, p in zip(ids, paths):
            g = p.with_name(p.name.replace(frm, to))
            if not g.exists():
                raise InvalidInputError(f"dataset {spec.name!r}: ground truth {str(g)!r} of "
                                        f"image {p.name!r} does not exist (gt_replace={list(spec.gt_replace)})")
            raw = read_raw(g)
            pts[i] = points_from_dots(raw) if spec.gt == "dots" else points_from_labels(raw)
    else:
        t = load_points(spec.gt, ImageSet(ids, images, [str(p) for p in paths]),
                        name=f"dataset {spec.name!r} gt")
        for i in ids:
            m = t["image_id"].astype(str) == i
            pts[i] = np.stack([t["y"][m], t["x"][m]], axis=1)
    if spec.tiles > 1:
        ids, images, rows = _tile(ids, images, pts, spec.tiles)
    else:
        rows = [(i, y, x) for i in ids for y, x in pts[i]]
    test_ids = _test_ids(spec, ids)
    gt = _table(rows)

    def part(keep: set[str]) -> tuple[ImageSet, dict[str, np.ndarray]]:
        sel = [k for k, i in enumerate(ids) if i in keep]
        m = np.isin(gt["image_id"].astype(str), list(keep))
        return (ImageSet([ids[k] for k in sel], [images[k] for k in sel],
                         [f"{spec.images}:{ids[k]}" for k in sel]),
                {k: v[m] for k, v in gt.items()})

    train, train_gt = part(set(ids) - test_ids)
    test, test_gt = part(test_ids)
    if not train.ids or not test.ids:
        raise InvalidInputError(f"dataset {spec.name!r}: the split leaves {len(train.ids)} "
                                f"training and {len(test.ids)} test images; both need >= 1")
    return Dataset(spec, train, train_gt, test, test_gt)


def _test_ids(spec: DatasetSpec, ids: list[str]) -> set[str]:
    if spec.split is None:
        n_test = max(1, int(round(spec.test_fraction * len(ids))))
        if spec.split_seed is None:
            return set(ids[-n_test:])
        base = sorted(dict.fromkeys(i.split("_t")[0] if spec.tiles > 1 else i for i in ids))
        n_test = max(1, int(round(spec.test_fraction * len(base))))
        pick = np.random.default_rng(spec.split_seed).permutation(len(base))[:n_test]
        test_base = {base[k] for k in pick}
        return {i for i in ids if (i.split("_t")[0] if spec.tiles > 1 else i) in test_base}
    with open(spec.split, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    split = {image_id(r["image"]): r["split"].strip().lower() for r in rows}
    unknown = sorted(set(split.values()) - {"train", "test"})
    if unknown:
        raise InvalidInputError(f"dataset {spec.name!r}: split values {unknown}; use train/test")
    base = {i: split.get(i.split("_t")[0] if spec.tiles > 1 else i) for i in ids}
    return {i for i, s in base.items() if s == "test"}


def read_dataset_toml(path: str | Path) -> list[DatasetSpec]:
    """``[[dataset]]`` tables of a TOML file; relative paths are relative to the file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise InvalidConfigError(f"datasets file {str(path)!r}: {e}") from e
    specs = []
    for d in data.get("dataset", []):
        d = dict(d)
        for key in ("images", "split"):
            if key in d and not Path(d[key]).is_absolute():
                d[key] = str((path.parent / d[key]).resolve())
        if str(d.get("gt", "")).endswith(".csv") and not Path(d["gt"]).is_absolute():
            d["gt"] = str((path.parent / d["gt"]).resolve())
        specs.append(DatasetSpec.from_dict(d))
    if not specs:
        raise InvalidConfigError(f"datasets file {str(path)!r} declares no [[dataset]]")
    return specs


def parse_dataset_arg(text: str) -> DatasetSpec:
    """``name=x,images=DIR,gt=dots,gt_replace=cells:dots,radius=15`` → DatasetSpec."""
    d: dict[str, Any] = {}
    for part in text.split(","):
        if "=" not in part:
            raise InvalidConfigError(f"--dataset {text!r}: {part!r} is not key=value")
        k, v = (s.strip() for s in part.split("=", 1))
        if k == "gt_replace":
            d[k] = tuple(v.split(":"))
        elif k in ("test_fraction", "radius"):
            d[k] = float(v)
        elif k in ("tiles", "split_seed"):
            d[k] = int(v)
        else:
            d[k] = v
    return DatasetSpec.from_dict(d)


def default_datasets() -> list[DatasetSpec]:
    """The shared bright-field set: images 001-040 train, 041-050 test, radius 15 px."""
    from pseudocell.data.fetch import locate_brightfield

    return [DatasetSpec(name="brightfield", images=str(locate_brightfield()),
                        pattern="*cells.png", gt="dots", gt_replace=("cells", "dots"),
                        test_fraction=0.2, radius=15.0)]
