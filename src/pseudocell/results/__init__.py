"""A run's results: the reader (labels, detections, model, metrics of any round),
``final/``, export (napari, QuPath GeoJSON, CSV) and reports (tables, plots)."""
from pseudocell.results.reader import RunResults

__all__ = ["RunResults"]
