"""URI-addressed file access through fsspec: local paths and ``file://`` now, ``s3://``
and other fsspec protocols without code changes.

Every read or write of a store file goes through these helpers, so no module of the
package builds a local path by hand.
"""
from __future__ import annotations

import os
import uuid
from typing import IO

import fsspec
from fsspec.implementations.local import LocalFileSystem

__all__ = ["filesystem", "is_local", "resolve_root", "exists", "open_uri", "read_bytes",
           "write_bytes", "write_atomic", "makedirs", "remove", "list_files", "put_dir"]

#: protocols whose listings cannot go stale behind our back (one process's memory or disk)
_NO_LISTING_CACHE_NEEDED = {None, "file", "local", "memory"}


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path inside it) of ``uri``.

    Object stores are opened without a listings cache: stage outputs are written by
    other processes (Ray actors), and a cached listing would hide them from the driver's
    checksums.
    """
    protocol = fsspec.core.split_protocol(str(uri))[0]
    if protocol in _NO_LISTING_CACHE_NEEDED:
        return fsspec.core.url_to_fs(str(uri))
    return fsspec.core.url_to_fs(str(uri), use_listings_cache=False)


def resolve_root(uri) -> str:
    """A run or store root as a canonical string: an absolute local path, or the URI
    (``s3://bucket/prefix``) without a trailing slash."""
    uri = str(uri)
    if fsspec.core.split_protocol(uri)[0] in (None, "file", "local"):
        from pathlib import Path

        return str(Path(fsspec.core.strip_protocol(uri) if uri.startswith("file:") else uri)
                   .expanduser().resolve())
    return uri.rstrip("/")


def is_local(uri: str) -> bool:
    """True for plain paths and ``file://`` URIs."""
    return isinstance(filesystem(uri)[0], LocalFileSystem)


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def open_uri(uri: str, mode: str = "rb") -> IO:
    """Open a file for reading or writing (parents are created on local disk)."""
    fs, path = filesystem(uri)
    if "w" in mode and isinstance(fs, LocalFileSystem):
        fs.makedirs(fs._parent(path), exist_ok=True)
    return fs.open(path, mode)


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    return fs.cat_file(path)


def write_bytes(uri: str, data: bytes) -> None:
    with open_uri(uri, "wb") as f:
        f.write(data)


def write_atomic(uri: str, data: bytes) -> None:
    """Write ``data`` so that readers see either nothing or all of it.

    Local disk: temp file in the same folder, fsync, ``os.replace``. Object stores: one
    PUT of the whole object, which S3 semantics make visible all at once (no rename).
    """
    fs, path = filesystem(uri)
    if isinstance(fs, LocalFileSystem):
        fs.makedirs(fs._parent(path), exist_ok=True)
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)


def makedirs(uri: str) -> None:
    """Create a folder (a no-op on object stores, which have none)."""
    fs, path = filesystem(uri)
    fs.makedirs(path, exist_ok=True)


def remove(uri: str) -> None:
    """Delete a file or a whole tree; absent is fine."""
    fs, path = filesystem(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def list_files(uri: str) -> list[str]:
    """Relative paths ('/'-separated, sorted) of every file under ``uri``; ``[""]`` when
    ``uri`` is itself a file; ``[]`` when it does not exist."""
    fs, path = filesystem(uri)
    if not fs.exists(path):
        return []
    if fs.isfile(path):
        return [""]
    root = path.rstrip("/") + "/"
    return sorted(p[len(root):] if p.startswith(root) else p
                  for p in fs.find(path, withdirs=False))


def put_dir(local: str, uri: str) -> None:
    """Upload the local folder ``local`` (recursively) to ``uri``."""
    fs, path = filesystem(uri)
    fs.put(local.rstrip("/") + "/", path.rstrip("/"), recursive=True)
