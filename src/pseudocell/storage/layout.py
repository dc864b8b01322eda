"""Where everything of a run lives. All paths of the run directory are built here.

Paths are strings: local paths or URIs (``s3://bucket/prefix/run``); every store helper
reads and writes both. What must be a local file (the MLflow journal, the log file,
files handed to MLflow and to image writers) lives in :attr:`RunLayout.local_dir`, which is
the run directory itself when that is local.

Records inside a run (manifests) name the run's own stores by paths relative to the run
root (``round_000/predict/peaks.parquet``), so a copied or moved run directory reads and
writes itself only. :meth:`RunLayout.record` makes such a name, :meth:`RunLayout.uri`
turns one back into a URI under the current root.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

from pseudocell.errors import RunDirectoryError

__all__ = ["SCHEMA_VERSION", "SOURCE_PREFIX", "RunLayout", "join", "is_relative", "source_id"]

SCHEMA_VERSION = 1

#: The first folder of a run-relative path (where an old absolute record's own part starts).
_RUN_PART = re.compile(r"/(?:inputs|final|human|review|round_\d{3})/")


#: Prefix of source-domain image ids in a run (``adapt`` modes): a source and a target
#: image may have the same file name.
SOURCE_PREFIX = "source:"


def source_id(image_id: str) -> str:
    """The run's id of source image ``image_id``.

    >>> source_id("img01")
    'source:img01'
    """
    return SOURCE_PREFIX + str(image_id)


def is_relative(uri: str) -> bool:
    """True for a run-relative record (no scheme, no leading '/')."""
    return "://" not in uri and not uri.startswith("/")


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

    def _under(self, uri: str) -> str | None:
        """``uri`` relative to the root if it lies under it, else None."""
        root = self.root.rstrip("/") + "/"
        return uri[len(root):] if uri.startswith(root) else None

    def record(self, uri: str) -> str:
        """How a manifest records ``uri``: relative to the run root.

        An absolute URI under another root (the record of a run made before records were
        relative, then moved or copied) is read as that run's own part (``…/round_000/
        predict/x`` → ``round_000/predict/x``): it names this run's store, never the
        other location. Anything else outside the run is refused.

        >>> RunLayout("/tmp/run").record("/tmp/run/round_000/predict/peaks.parquet")
        'round_000/predict/peaks.parquet'
        >>> RunLayout("/tmp/copy").record("/tmp/run/inputs/images.zarr")
        'inputs/images.zarr'
        """
        if is_relative(uri):
            return uri
        rel = self._under(uri)
        if rel is not None:
            return rel
        found = list(_RUN_PART.finditer(uri))
        if not found:
            raise RunDirectoryError(
                f"the run {self.root!r} records the store {uri!r}, which lies outside the "
                "run directory; a run must hold its own stores: start it again with "
                "`pseudocell run --force`")
        return uri[found[-1].start() + 1:]

    def uri(self, recorded: str) -> str:
        """The URI under this run's root of a manifest record (see :meth:`record`).

        >>> RunLayout("/tmp/copy").uri("round_000/predict/peaks.parquet")
        '/tmp/copy/round_000/predict/peaks.parquet'
        """
        return join(self.root, self.record(recorded))

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
    def source_images(self) -> str:
        return join(self.inputs, "source_images.zarr")

    @property
    def source_points(self) -> str:
        return join(self.inputs, "source_points.parquet")

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

    # -- a person's reviews (human in the loop) -------------------------------------------
    @property
    def human(self) -> str:
        """Everything a person's reviews put into the run (``pseudocell ingest``)."""
        return join(self.root, "human")

    def human_review(self, rnd: int) -> str:
        """The answers of one review (of round ``rnd``'s detections), as ingested."""
        return join(self.human, "reviews", f"round_{rnd:03d}")

    def human_store(self, rnd: int) -> str:
        """Every review of rounds ``<= rnd``, merged: what rounds ``> rnd`` train on."""
        return join(self.human, f"after_{rnd:03d}")

    def review_dir(self, rnd: int) -> str:
        """The tiles suggested for review from round ``rnd``'s detector
        (``pseudocell suggest``)."""
        return join(self.root, "review", f"round_{rnd:03d}")
