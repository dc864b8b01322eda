"""pseudocell: cell detection from a few annotated points, grown by PU pseudo-labelling."""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
