"""Human-readable tables of a run's metrics (rich)."""
from __future__ import annotations

from typing import Any

__all__ = ["round_table", "round_table_markdown"]


def _columns(rows: list[dict]) -> list[tuple[str, str]]:
    """(header, key) of the columns present, in a fixed order."""
    keys = set().union(*rows) if rows else set()
    cols = []
    for split, label in (("train", "train"), ("heldout", "held-out")):
        radii = sorted({k.split("@")[1].split("/")[0] for k in keys if k.startswith(split + "@")},
                       key=lambda r: -float(r))
        for r in radii:
            for m, short in (("precision", "P"), ("recall", "R"), ("f1", "F")):
                cols.append((f"{label} {short}@{r}", f"{split}@{r}/{m}"))
    for key, head in (("n_pseudo_pos", "+pos"), ("n_pseudo_neg", "+neg"),
                      ("pseudo_pos_precision", "pos prec"),
                      ("pseudo_neg_background_fraction", "neg bg")):
        if key in keys:
            cols.append((head, key))
    return cols


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def round_table(metrics: dict):
    """A ``rich.table.Table``: one row per round (detector r; pseudo-labels it selected)."""
    from rich.table import Table

    rows = metrics["rounds"]
    t = Table(title="pseudocell: per-round detection quality (P/R/F at matching radius px)")
    cols = _columns(rows)
    t.add_column("round", justify="right")
    for head, _ in cols:
        t.add_column(head, justify="right")
    for r in rows:
        t.add_row(str(r["round"]), *[_fmt(r.get(k)) for _, k in cols])
    return t


def round_table_markdown(metrics: dict) -> str:
    """The same table as GitHub markdown (for notes and reports)."""
    rows = metrics["rounds"]
    cols = _columns(rows)
    lines = ["| round | " + " | ".join(h for h, _ in cols) + " |",
             "|---:|" + "---:|" * len(cols)]
    for r in rows:
        lines.append(f"| {r['round']} | " + " | ".join(_fmt(r.get(k)) for _, k in cols) + " |")
    return "\n".join(lines)
