"""Human-readable tables of a run's metrics (rich)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["round_table", "round_table_markdown", "plot_rounds"]


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


def _prf(row: dict, prefix: str) -> str:
    vals = [row.get(f"{prefix}/{m}") for m in ("precision", "recall", "f1")]
    return "-" if vals[0] is None else "/".join(f"{v:.3f}" for v in vals)


def round_table(metrics: dict):
    """A compact ``rich.table.Table``: one row per round, P/R/F in one cell per split and
    radius, then the pseudo-labels selected with that round's detector."""
    from rich.table import Table

    rows = metrics["rounds"]
    keys = set().union(*rows) if rows else set()
    splits = sorted({k.split("/")[0] for k in keys if "@" in k},
                    key=lambda s: (not s.startswith("train"), -float(s.split("@")[1])))
    t = Table(title="per-round detection P/R/F (matching radius in px) and pseudo-labels")
    t.add_column("round", justify="right")
    for s in splits:
        name, radius = s.split("@")
        t.add_column(f"{'held-out' if name == 'heldout' else name} @{radius}\nP/R/F",
                     justify="center", no_wrap=True, min_width=17)
    pseudo = "n_pseudo_pos" in keys
    if pseudo:
        t.add_column("added\n+pos/-neg", justify="right", no_wrap=True)
        t.add_column("+pos\nprecision", justify="right")
        t.add_column("-neg\nbackground", justify="right")
    for r in rows:
        cells = [_prf(r, s) for s in splits]
        if pseudo:
            added = "-" if r.get("n_pseudo_pos") is None else \
                f"{r['n_pseudo_pos']}/{r['n_pseudo_neg']}"
            cells += [added, _fmt(r.get("pseudo_pos_precision")),
                      _fmt(r.get("pseudo_neg_background_fraction"))]
        t.add_row(str(r["round"]), *cells)
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


def plot_rounds(metrics: dict, path: str | Path) -> Path | None:
    """Line plot of precision, recall and F1 against round, one panel per split and
    matching radius (training images, held-out images); returns ``path``, or None
    when the run has no ground truth to score against."""
    rows = metrics["rounds"]
    keys = set().union(*rows) if rows else set()
    splits = sorted({k.split("/")[0] for k in keys if "@" in k},
                    key=lambda s: (not s.startswith("train"), -float(s.split("@")[1])))
    if not splits:
        return None
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    fig = Figure(figsize=(4 * len(splits), 3.2))
    axes = fig.subplots(1, len(splits), squeeze=False, sharey=True)
    for ax, split in zip(axes[0], splits):
        name, radius = split.split("@")
        for m, style in (("precision", "o--"), ("recall", "s--"), ("f1", "D-")):
            pts = [(r["round"], r[f"{split}/{m}"]) for r in rows
                   if r.get(f"{split}/{m}") is not None]
            if pts:
                ax.plot(*zip(*pts), style, label=m)
        ax.set_title(f"{'held-out' if name == 'heldout' else name} images, {radius} px")
        ax.set_xlabel("round")
        ax.set_xticks([r["round"] for r in rows])
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("score")
    axes[0][-1].legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
