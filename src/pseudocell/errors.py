"""Every exception pseudocell raises on purpose.

The CLI maps :class:`PseudocellError` to exit code 1 with a one-line message; any other
exception is a bug and keeps its traceback.
"""
from __future__ import annotations

__all__ = [
    "PseudocellError",
    "InvalidInputError",
    "InvalidConfigError",
    "RunDirectoryError",
    "StoreError",
    "StageError",
    "ServiceError",
    "DataUnavailableError",
]


class PseudocellError(Exception):
    """Base class of every error pseudocell raises deliberately."""


class InvalidInputError(PseudocellError, ValueError):
    """A user input (image, points file, path) is missing, unreadable or malformed.

    >>> raise InvalidInputError("images: folder 'x' holds no .png/.tif image. Point --images at ...")
    Traceback (most recent call last):
    ...
    pseudocell.errors.InvalidInputError: images: folder 'x' holds no .png/.tif image. Point --images at ...
    """


class InvalidConfigError(PseudocellError, ValueError):
    """One or more config fields are out of range or inconsistent; the message lists all."""


class RunDirectoryError(PseudocellError):
    """A run directory exists with a different config, or is not a pseudocell run."""


class StoreError(PseudocellError):
    """A store is missing, truncated or does not match its manifest."""


class StageError(PseudocellError):
    """A stage failed; the message names the round and the stage, the cause is chained."""


class ServiceError(PseudocellError):
    """A helper service that pseudocell starts (the MLflow UI) could not run."""


class DataUnavailableError(PseudocellError):
    """Demo data is neither on disk nor downloadable (offline, or checksum mismatch)."""
