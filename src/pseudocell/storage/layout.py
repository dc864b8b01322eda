"""Where everything of a run lives. All paths of the run directory are built here.

Paths are strings: local paths or URIs (``s3://bucket/prefix/run``); every store helper
reads and writes both. What must be a local file (the MLflow journal, the log file,
files handed to MLflow and to image writers) lives in :attr:`RunLayout.local_dir`, which is
the run directory itself when that is local.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

__all__ = ["SCHEMA_VERSION", "RunLayout", "join"]

SCHEMA_VERSION = 1

def join(*parts: str) -> str:
    """Join URI parts with '/' (works for local paths and s3://)."""
    head, *rest = parts
    return "/".join([head.rstrip("/")] + [p.strip("/") for p in rest])


@dataclass(frozen=True)
class RunLayout:
    """Paths of one run directory ``root``.

    >>> RunLayout("/tmp/run").stage_dir(1, "predict")
    '/tmp/run/round_001/predict'
    """

    root: str

    @property
    def is_local(self) -> bool:
        return "://" not in self.root or self.root.startswith("file://")

    @property
    def local_dir(self) -> str:
        """The run directory if local; else a local folder of this run in the cache
        (``$PSEUDOCELL_CACHE`` or ``~/.cache/pseudocell``, ``runs/<name>-<hash>``)."""
        if self.is_local:
            return self.root
        cache = os.environ.get("PSEUDOCELL_CACHE") or os.path.expanduser("~/.cache/pseudocell")
        digest = hashlib.sha256(self.root.encode()).hexdigest()[:12]
        return os.path.join(cache, "runs", f"{self.root.rstrip('/').rsplit('/', 1)[-1]}-{digest}")

    @property
    def config(self) -> str:
        return join(self.root, "config.toml")

    @property
    def inputs(self) -> str:
        return join(self.root, "inputs")

    @property
    def images(self) -> str:
        return join(self.inputs, "images.zarr")

    @property
    def points(self) -> str:
        return join(self.inputs, "points.parquet")

    @property
    def gt(self) -> str:
        return join(self.inputs, "gt.parquet")

    @property
    def eval_images(self) -> str:
        return join(self.inputs, "eval_images.zarr")

    @property
    def eval_gt(self) -> str:
        return join(self.inputs, "eval_gt.parquet")

    @property
    def inputs_manifest(self) -> str:
        return join(self.inputs, "_manifest.json")

    def round_dir(self, rnd: int) -> str:
        return join(self.root, f"round_{rnd:03d}")

    def stage_dir(self, rnd: int, stage: str) -> str:
        return join(self.round_dir(rnd), stage)

    def manifest(self, rnd: int, stage: str) -> str:
        return join(self.stage_dir(rnd, stage), "_manifest.json")

    @property
    def final(self) -> str:
        return join(self.root, "final")
