"""How clean the pseudo-labels of each round are, and why (issue 18's diagnosis).

For every round of finished runs that were given ground truth (``--gt``, so the run
holds ``inputs/gt.parquet``), against that ground truth at the run's ``radius``:

* ``U bg``: the share of the unlabeled detections X_U that are background (no cell
  within ``radius``). The loop asks for ``beta`` x #U negatives; when ``U bg`` is near
  or below ``beta`` no ranking can return clean ones.
* ``prior`` / ``U cells``: the nnPU class prior the round used (share of cells in U)
  against the true share; ``prior clicked``: Elkan-Noto with only the clicked
  (``annotated``) points as labelled positives and every other patch as unlabeled,
  converted to U's share (pseudo-positives count as cells), i.e. without the
  pseudo-positives, which are U's most cell-like detections and so not labelled at
  random as Elkan-Noto assumes.
* ``chosen``: the round's negative pseudo-labels and their background share;
  ``top-k bg`` for k = round(beta x #U): the background share of the k highest
  unlabeled detections by the flipped ranker's score (``neg``), by the lowest detector
  peak (``-peak``) and by the lowest nnPU score (``-pu``); ``AUC``: how well each score
  orders background before cells over all of U; ``blend``: the N-score and the lowest
  peak blended by rank (``peak_rank_weight`` = 0.5, :func:`blend_ranks`).
* positives: the round's positive pseudo-labels and their background share; ``top-k
  bg`` for k = round(alpha x #U) by the P-ranker's score (``pos``), by the same among
  detections the nnPU classifier calls cells (``pos&pu``: ``pu_agree``, the default), by
  the detector peak (``peak``) and by the two blended (``blend``).

With ``--summary`` a last table pools the rounds of all the runs given: the mean over
rounds of every top-k share, and the share over all the pseudo-labels together.

    .venv/bin/python benchmarks/negatives.py runs/bench-human/brightfield/seed2/suggest \\
        --out runs/negatives.json

Prints a markdown table per run and writes every number to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tomllib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pseudocell.core.metrics import near_any  # noqa: E402
from pseudocell.core.pu import estimate_prior_elkan_noto  # noqa: E402
from pseudocell.core.select import blend_ranks, top_k  # noqa: E402
from pseudocell.data.points import points_by_image  # noqa: E402
from pseudocell.stages.loop import PRIOR_SAMPLE, _prior_sample, _rows_of  # noqa: E402
from pseudocell.storage import arrays, tables  # noqa: E402

logger = logging.getLogger("negatives")

def _manifest(run: Path, rnd: int, stage: str) -> dict | None:
    path = run / f"round_{rnd:03d}" / stage / "_manifest.json"
    return json.loads(path.read_text()) if path.exists() else None


def _uri(run: Path, man: dict, key: str, side: str = "outputs") -> str:
    uri = man[side][key]["uri"]
    return uri if "://" in uri or uri.startswith("/") else str(run / uri)


def _is_cell(table: dict, gt: dict, radius: float) -> np.ndarray:
    """Whether each row of a table (image_id, y, x) lies within ``radius`` of a cell."""
    img = table["image_id"].astype(str)
    yx = np.stack([table["y"], table["x"]], axis=1)
    out = np.zeros(len(img), bool)
    for i in np.unique(img):
        m = img == i
        out[m] = near_any(yx[m], gt.get(i, np.zeros((0, 2))), radius)
    return out


def _auc(score: np.ndarray, label: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties count half."""
    from scipy.stats import rankdata
    pos, n_pos = label.astype(bool), int(label.sum())
    n_neg = len(label) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = rankdata(score)
    return float((r[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _top_bg(score: np.ndarray, bg: np.ndarray, k: int,
            eligible: np.ndarray | None = None) -> float:
    """Background share of the ``k`` highest scores (ties: lower index first), taken
    among the ``eligible`` samples only when given (as the loop's ``choose``)."""
    order = top_k(score, k, eligible)
    return float(bg[order].mean()) if len(order) else float("nan")


def _prior_clicked(run: Path, man: dict, table: dict, seed: int) -> float:
    """Elkan-Noto prior of U with only the clicked points as labelled positives
    (``man``: the round's extract_patches manifest; patches sampled as train_pu does)."""
    points = tables.read_table(_uri(run, man, "points", "inputs"))
    ids = list(dict.fromkeys(table["image_id"].astype(str)))
    clicked = points_by_image(points, ids, ("annotated",))
    is_p = table["set"].astype(str) == "P"
    ann = is_p & _is_cell(table, clicked, 1e-6)
    sp, sm = _prior_sample(ann, PRIOR_SAMPLE, seed)
    patches = arrays.read_array(_uri(run, man, "patches"))
    pi_m = estimate_prior_elkan_noto(patches[sp], patches[sm], seed)
    n_m, n_pseudo, n_u = int((~ann).sum()), int((is_p & ~ann).sum()), int((~is_p).sum())
    return float(np.clip((pi_m * n_m - n_pseudo) / max(n_u, 1), 0.0, 1.0))


def analyse(run: Path, *, clicked_prior: bool = True) -> list[dict]:
    """One row per round of ``run`` that ranked its unlabeled detections."""
    cfg = tomllib.loads((run / "config.toml").read_text())
    radius, alpha, beta = float(cfg["radius"]), float(cfg["alpha"]), float(cfg["beta"])
    gt_path = run / "inputs" / "gt.parquet"
    if not gt_path.exists():
        raise SystemExit(f"{run}: no inputs/gt.parquet; run it with --gt to diagnose it")
    gt_table = tables.read_table(str(gt_path))
    gt = points_by_image(gt_table, list(dict.fromkeys(gt_table["image_id"].astype(str))))
    rows = []
    for rnd in range(1000):
        rank_man = _manifest(run, rnd, "rank")
        if rank_man is None:
            if _manifest(run, rnd, "predict") is None:
                break
            continue
        ep_man = _manifest(run, rnd, "extract_patches")
        table = tables.read_table(_uri(run, ep_man, "table"))
        s = tables.read_table(_uri(run, rank_man, "scores"))
        if len(s["patch_id"]) == 0:
            continue
        bg = ~_is_cell(table, gt, radius)[_rows_of(table, s["patch_id"])]
        pu_man = _manifest(run, rnd, "train_pu")
        pu = tables.read_table(_uri(run, pu_man, "pu_scores"))
        pu_score = np.asarray(pu["pu_score"])[_rows_of(pu, s["patch_id"])]
        sel = tables.read_table(_uri(run, _manifest(run, rnd, "select"), "selected"))
        kind = sel["kind"].astype(str)
        neg = np.isin(s["patch_id"], sel["patch_id"][kind == "neg"])
        pos = np.isin(s["patch_id"], sel["patch_id"][kind == "pos"])
        k = int(np.floor(beta * len(bg) + 0.5))
        k_pos = int(np.floor(alpha * len(bg) + 0.5))
        peak, p_score = np.asarray(s["peak"]), np.asarray(s["pos_score"])
        scores = {"neg": np.asarray(s["neg_score"]), "-peak": -peak, "-pu": -pu_score,
                  "blend": blend_ranks(s["neg_score"], -peak, 0.5)}
        pos_top = {"pos": _top_bg(p_score, bg, k_pos),
                   "pos&pu": _top_bg(p_score, bg, k_pos, pu_score > 0),
                   "peak": _top_bg(peak, bg, k_pos),
                   "blend": _top_bg(blend_ranks(p_score, peak, 0.5), bg, k_pos)}
        row = {"round": rnd, "n_U": int(len(bg)), "U_bg": float(bg.mean()),
               "prior": pu_man["metrics"].get("pu_prior"), "U_cells": float(1 - bg.mean()),
               "n_chosen": int(neg.sum()),
               "chosen_bg": float(bg[neg].mean()) if neg.any() else float("nan"), "k": k,
               "top_bg": {n: _top_bg(v, bg, k) for n, v in scores.items()},
               "auc_bg": {n: _auc(v, bg) for n, v in scores.items()},
               "n_pos_chosen": int(pos.sum()),
               "pos_chosen_bg": float(bg[pos].mean()) if pos.any() else float("nan"),
               "k_pos": k_pos, "pos_top_bg": pos_top}
        if clicked_prior:
            row["prior_clicked"] = _prior_clicked(run, ep_man, table, int(cfg["seed"]))
        rows.append(row)
        logger.info("%s round %d done", run, rnd)
    return rows


def _f(v) -> str:
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"


def table(run: Path, rows: list[dict]) -> str:
    neg_orders = " / ".join(rows[0]["top_bg"]) if rows else ""
    pos_orders = " / ".join(rows[0]["pos_top_bg"]) if rows else ""
    head = ("| round | #U | U bg | prior | prior clicked | U cells | neg chosen | neg chosen bg | "
            f"neg top-k bg {neg_orders} | AUC bg {neg_orders} | pos chosen | pos chosen bg | "
            f"pos top-k bg {pos_orders} |")
    out = [f"### {run}", "", head, "|" + "---:|" * 13]
    for r in rows:
        out.append(
            f"| {r['round']} | {r['n_U']} | {_f(r['U_bg'])} | {_f(r['prior'])} | "
            f"{_f(r.get('prior_clicked'))} | {_f(r['U_cells'])} | {r['n_chosen']} | "
            f"{_f(r['chosen_bg'])} | {' / '.join(_f(v) for v in r['top_bg'].values())} | "
            f"{' / '.join(_f(v) for v in r['auc_bg'].values())} | {r['n_pos_chosen']} | "
            f"{_f(r['pos_chosen_bg'])} | "
            f"{' / '.join(_f(v) for v in r['pos_top_bg'].values())} |")
    return "\n".join(out)


def pooled(rows: list[dict]) -> dict:
    """Every top-k share of ``rows`` (rounds of any runs): its mean over the rounds and
    its share over all their pseudo-labels together (weighted by k)."""
    out: dict = {"n_rounds": len(rows)}
    for key, k_key in (("top_bg", "k"), ("pos_top_bg", "k_pos")):
        for name in rows[0][key] if rows else ():
            v = np.array([r[key][name] for r in rows], float)
            w = np.array([r[k_key] for r in rows], float)
            ok = ~np.isnan(v)
            out[f"{key}/{name}"] = {
                "mean": float(v[ok].mean()) if ok.any() else float("nan"),
                "pooled": float((v[ok] * w[ok]).sum() / w[ok].sum()) if w[ok].sum() else float("nan")}
    return out


def summary_table(name: str, pool: dict) -> str:
    out = [f"### {name}: {pool['n_rounds']} rounds pooled", "",
           "| pseudo-labels | order | top-k bg, mean over rounds | top-k bg, pooled |",
           "|---|---|---:|---:|"]
    for key, v in pool.items():
        if key == "n_rounds":
            continue
        kind, order = key.split("/")
        out.append(f"| {'negatives' if kind == 'top_bg' else 'positives'} | {order} | "
                   f"{_f(v['mean'])} | {_f(v['pooled'])} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="example: benchmarks/negatives.py "
                                        "runs/bench-human/u2os/seed1/suggest")
    ap.add_argument("runs", nargs="+", type=Path, help="finished run directories (with --gt)")
    ap.add_argument("--out", type=Path, default=Path("runs/negatives.json"))
    ap.add_argument("--no-clicked-prior", action="store_true",
                    help="skip the clicked-points prior (a logistic regression per round)")
    ap.add_argument("--summary", action="store_true",
                    help="also pool the rounds of all the runs given into one table")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = {}
    for run in a.runs:
        rows = analyse(run, clicked_prior=not a.no_clicked_prior)
        result[str(run)] = rows
        print(table(run, rows) + "\n")
    if a.summary:
        result["pooled"] = pooled([r for rows in result.values() for r in rows])
        print(summary_table(f"{len(a.runs)} runs", result["pooled"]) + "\n")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
