"""MLflow tracking of runs (driver only): the journalled :class:`Tracker` and ``sync``."""
from pseudocell.tracking.tracker import (DEFAULT_EXPERIMENT, ROUND_OVERLAYS, Tracker,
                                         default_tracking_uri, metric_name, round_metrics,
                                         stage_metrics, sync)

__all__ = ["Tracker", "sync", "default_tracking_uri", "metric_name", "stage_metrics",
           "round_metrics", "DEFAULT_EXPERIMENT", "ROUND_OVERLAYS"]
