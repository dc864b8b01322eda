"""Stage manifests: a stage is finished iff its manifest exists and matches.

The manifest is written last and atomically (temp file + ``os.replace``). It records the
config hash, the hashes of the input manifests, the outputs with content checksums, the
timings and the library versions. ``manifest_hash`` is what downstream stages record.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from pseudocell.errors import StoreError

__all__ = ["checksum", "write_manifest", "read_manifest", "manifest_hash", "verify_outputs",
           "remove_tree"]


def checksum(uri: str) -> str:
    """sha256 over a file, or over a directory tree (relative paths + bytes, sorted)."""
    p = Path(uri)
    h = hashlib.sha256()
    if p.is_file():
        h.update(p.read_bytes())
    elif p.is_dir():
        for f in sorted(x for x in p.rglob("*") if x.is_file()):
            h.update(f.relative_to(p).as_posix().encode() + b"\0")
            h.update(f.read_bytes())
    else:
        raise StoreError(f"cannot checksum {uri!r}: it does not exist")
    return h.hexdigest()


def write_manifest(uri: str, payload: dict[str, Any]) -> str:
    """Atomically write ``payload`` as JSON to ``uri``; returns its :func:`manifest_hash`."""
    text = json.dumps(payload, indent=1, sort_keys=True, default=str)
    tmp = uri + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, uri)
    return hashlib.sha256(text.encode()).hexdigest()


def read_manifest(uri: str) -> dict[str, Any] | None:
    """The manifest at ``uri``, or None when absent or unreadable (= stage unfinished)."""
    try:
        with open(uri) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def manifest_hash(uri: str) -> str:
    """sha256 of the manifest file's bytes."""
    return hashlib.sha256(Path(uri).read_bytes()).hexdigest()


def verify_outputs(manifest: dict[str, Any]) -> list[str]:
    """Names of outputs whose content no longer matches the recorded checksum."""
    bad = []
    for name, rec in manifest.get("outputs", {}).items():
        try:
            if checksum(rec["uri"]) != rec["sha256"]:
                bad.append(name)
        except StoreError:
            bad.append(name)
    return bad


def remove_tree(uri: str) -> None:
    """Delete a stage directory (partial outputs of an unfinished stage)."""
    p = Path(uri)
    if p.is_dir():
        shutil.rmtree(p)
    elif p.exists():
        p.unlink()
