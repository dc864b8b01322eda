"""Stage manifests: a stage is finished iff its manifest exists and matches.

The manifest is written last and atomically (local disk: temp file + ``os.replace``;
object stores: one PUT of the manifest object, after every output). It records the
config hash, the hashes of the input manifests, the outputs with content checksums, the
timings and the library versions. ``manifest_hash`` is what downstream stages record.
Store URIs are recorded relative to the run root (:meth:`RunLayout.record`), so a
manifest's bytes, and with them every hash, do not depend on where the run lies.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from pseudocell.errors import StoreError
from pseudocell.storage import fs
from pseudocell.storage.layout import RunLayout

__all__ = ["checksum", "write_manifest", "read_manifest", "manifest_hash", "verify_outputs",
           "remove_tree"]


def checksum(uri: str) -> str:
    """sha256 over a file, or over a directory tree (relative paths + bytes, sorted)."""
    files = fs.list_files(uri)
    if not files:
        raise StoreError(f"cannot checksum {uri!r}: it does not exist")
    h = hashlib.sha256()
    if files == [""]:
        h.update(fs.read_bytes(uri))
        return h.hexdigest()
    for rel in files:
        h.update(rel.encode() + b"\0")
        h.update(fs.read_bytes(uri.rstrip("/") + "/" + rel))
    return h.hexdigest()


def write_manifest(uri: str, payload: dict[str, Any]) -> str:
    """Atomically write ``payload`` as JSON to ``uri``; returns its :func:`manifest_hash`."""
    text = json.dumps(payload, indent=1, sort_keys=True, default=str)
    fs.write_atomic(uri, text.encode())
    return hashlib.sha256(text.encode()).hexdigest()


def read_manifest(uri: str) -> dict[str, Any] | None:
    """The manifest at ``uri``, or None when absent or unreadable (= stage unfinished)."""
    try:
        return json.loads(fs.read_bytes(uri))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def manifest_hash(uri: str) -> str:
    """sha256 of the manifest file's bytes."""
    return hashlib.sha256(fs.read_bytes(uri)).hexdigest()


def verify_outputs(manifest: dict[str, Any], layout: RunLayout | None = None) -> list[str]:
    """Names of outputs whose content no longer matches the recorded checksum (records
    are resolved under ``layout``'s root when given, else taken as they are)."""
    bad = []
    for name, rec in manifest.get("outputs", {}).items():
        uri = rec["uri"] if layout is None else layout.uri(rec["uri"])
        try:
            if checksum(uri) != rec["sha256"]:
                bad.append(name)
        except StoreError:
            bad.append(name)
    return bad


def remove_tree(uri: str) -> None:
    """Delete a stage directory (partial outputs of an unfinished stage)."""
    fs.remove(uri)
