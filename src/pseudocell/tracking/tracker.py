"""MLflow record of a run: one parent run per run directory, one nested child run per
round. Only the driver talks to MLflow (design.md); stages return metric dicts.

Everything to be logged is first appended to a local journal,
``<run>/tracking/events.jsonl``, then pushed to the tracking store. The journal makes
tracking

* **exactly-once across resume**: every stage, round and final record has a key and
  is journalled once, whether the stage ran now or was skipped by a resume; events keep
  their original timestamps, so re-pushing one is a no-op in MLflow's SQL stores;
* **one parent run**: the MLflow run ids are kept per tracking URI in
  ``tracking/state.json`` (and runs carry a ``pseudocell_uid`` tag, so a run created
  just before a crash is found again instead of duplicated);
* **robust to an unreachable server**: the first failure logs one warning, the loop
  goes on journalling, and ``pseudocell sync RUN`` pushes the rest later;
* **relocatable**: ``state.json`` names the run directory it belongs to. A copied or
  moved run directory is a new MLflow record: a fresh ``pseudocell_uid`` and no pushed
  targets, the default store re-pointed to its own ``mlflow.db``, and the copied
  ``mlflow.db``/``mlartifacts`` (whose artefact locations name the other directory) set
  aside under ``tracking/relocated-*``; the journal is then pushed again in full. It never
  writes into the other directory's store or its MLflow runs.

Metric names follow the config/CLI names; matching radii are spelled ``train_15px/f1``
(MLflow refuses ``@``). Per round (step = round) on the parent and on the round's run:
detection P/R/F, pseudo-labels added and their quality, label counts; per stage on the
round's run: ``time/<stage>`` (seconds), ``detector/loss`` (step = optimiser step) and
``pu/risk`` (step = epoch).
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
import uuid
from pathlib import Path
from typing import Any

from pseudocell.config import Config
from pseudocell.errors import InvalidInputError, RunDirectoryError
from pseudocell.results.finalize import final_artifacts, round_artifacts
from pseudocell.results.reader import RunResults
from pseudocell.stages.base import StageSpec
from pseudocell.storage import fs
from pseudocell.storage.layout import RunLayout

__all__ = ["DEFAULT_EXPERIMENT", "Tracker", "default_tracking_uri", "metric_name",
           "stage_metrics", "round_metrics", "sync"]

logger = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "pseudocell"
#: MLflow 3 opens an experiment in its GenAI views unless it is marked model training.
EXPERIMENT_KIND = "custom_model_development"
#: Overlays logged per round (the first training images; final/ has all of them).
ROUND_OVERLAYS = 4
_MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch call


def default_tracking_uri(run_dir: str | Path) -> str:
    """``sqlite:///<run>/mlflow.db``: an embedded store inside the run directory."""
    return f"sqlite:///{Path(run_dir).resolve() / 'mlflow.db'}"


def metric_name(key: str) -> str:
    """A metrics-table key as an MLflow metric name: ``train@15/f1`` → ``train_15px/f1``."""
    if "@" in key:
        split, rest = key.split("@", 1)
        radius, _, m = rest.partition("/")
        return f"{split}_{radius}px/{m}" if m else f"{split}_{radius}px"
    return key


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
        return float(v)
    return None


def stage_metrics(rnd: int, spec: StageSpec, metrics: dict,
                  seconds: float) -> list[tuple[str, float, int]]:
    """``(name, value, step)`` of one finished stage: its wall time, the scalar metrics
    it returned (step = round, unless its spec says they belong to the round's row) and
    the per-step series its spec declares (losses per window, risks per epoch)."""
    stage = spec.name
    out = [(f"time/{stage}", float(seconds), rnd)]
    for k, v in (metrics or {}).items():
        if k in spec.series:
            name, steps_key = spec.series[k]
            steps = (metrics.get(steps_key) if steps_key else None) or range(1, len(v) + 1)
            out += [(name, float(x), int(s)) for x, s in zip(v, steps)]
        elif spec.journal_scalars and k != "round" and _number(v) is not None:
            out.append((f"{stage}/{k}", _number(v), rnd))
    return out


def round_metrics(row: dict) -> list[tuple[str, float, int]]:
    """``(name, value, step=round)`` of one row of :meth:`~pseudocell.results.reader.
    RunResults.round_row` (NaN and missing values are left out)."""
    rnd = int(row["round"])
    return [(metric_name(k), _number(v), rnd) for k, v in row.items()
            if k != "round" and _number(v) is not None]


def _now_ms() -> int:
    return int(time.time() * 1000)


class _Journal:
    """Append-only list of tracking events plus the push state, in ``<run>/tracking``."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "tracking"
        self.events_path = self.dir / "events.jsonl"
        self.state_path = self.dir / "state.json"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.events: list[dict] = []
        if self.events_path.exists():
            for line in self.events_path.read_text().splitlines():
                try:
                    self.events.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by a crash: drop the tail
                    logger.warning("tracking journal %s: dropping a truncated line",
                                   self.events_path)
                    break
        self.keys = {e["key"] for e in self.events if e.get("key")}
        self.state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        if "uid" not in self.state:
            self.state["uid"] = uuid.uuid4().hex
            self.save_state()

    def append(self, event: dict) -> bool:
        """Journal ``event`` unless its key was journalled before; True if added."""
        key = event.get("key")
        if key and key in self.keys:
            return False
        event = {"seq": len(self.events), "ts": _now_ms(), **event}
        with open(self.events_path, "a") as f:
            f.write(json.dumps(event, allow_nan=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.events.append(event)
        if key:
            self.keys.add(key)
        return True

    def save_state(self) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1))
        tmp.replace(self.state_path)


def _moved_from(state: dict, root: str, local_dir: str) -> str | None:
    """The run directory a tracking state was written in, when it is not ``root``.

    States of older versions do not name their directory; theirs is inferred from a
    default store ``sqlite:///DIR/mlflow.db`` compared with the local directory of the
    run (a store in a directory above it is a sweep's, shared by its trials: not a move).
    """
    old = state.get("root")
    if old is not None:
        return None if old == root else old
    uri = state.get("uri") or ""
    if not (uri.startswith("sqlite:///") and uri.endswith("/mlflow.db")):
        return None
    old = uri[len("sqlite:///"):-len("/mlflow.db")]
    if local_dir == old or local_dir.startswith(old.rstrip("/") + "/"):
        return None
    return old


def _sqlite_inside(uri: str, root: str) -> str | None:
    """The path of the sqlite store ``uri`` relative to the directory ``root`` (as
    written or with symlinks resolved), None when it is no store inside it."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):]
    for r in (root.rstrip("/"), str(Path(root).resolve())):
        if path.startswith(r + "/"):
            return path[len(r) + 1:]
    return None


def _probe(uri: str) -> None:
    """Fail fast (5 s) on an HTTP tracking server that does not answer, instead of
    waiting through MLflow's retries."""
    if uri.startswith(("http://", "https://")):
        import requests

        requests.get(uri.rstrip("/") + "/health", timeout=5).raise_for_status()


class Tracker:
    """Journal and push the MLflow record of one run directory.

    Parameters
    ----------
    layout : RunLayout
        The run (its directory must exist).
    tracking_uri : str, optional
        MLflow tracking URI. Default: the one this run used before, else
        :func:`default_tracking_uri`.
    experiment : str, optional
        Experiment name. Default: the one this run used before, else ``"pseudocell"``.
    nest_under : str, optional
        MLflow run id to nest this run's parent run under (a sweep's run).
    light : bool, default=False
        One run only (a sweep trial): per-round metrics and stage times on it, no
        round runs, no per-round artefacts, and of the final artefacts only the
        config, metrics and plot.
    """

    def __init__(self, layout: RunLayout, *, tracking_uri: str | None = None,
                 experiment: str | None = None, nest_under: str | None = None,
                 light: bool = False) -> None:
        self.layout = layout
        self.root = Path(layout.local_dir)  # the journal is local even for s3:// runs
        if not layout.is_local:
            self.root.mkdir(parents=True, exist_ok=True)
        if not self.root.is_dir():
            raise RunDirectoryError(f"{layout.root!r} is not a run directory")
        self.journal = _Journal(self.root)
        st = self.journal.state
        moved_from = _moved_from(st, layout.root, str(self.root))
        if moved_from is not None:
            self._relocate(moved_from)
        if st.get("root") != layout.root:
            st["root"] = layout.root
            self.journal.save_state()
        self.uri = tracking_uri or st.get("uri") or default_tracking_uri(self.root)
        self.experiment = experiment or st.get("experiment") or DEFAULT_EXPERIMENT
        if not self.experiment.strip():
            raise InvalidInputError("--experiment must not be empty")
        if (st.get("uri"), st.get("experiment")) != (self.uri, self.experiment):
            st["uri"], st["experiment"] = self.uri, self.experiment
            self.journal.save_state()
        self.offline = False
        self._client = None
        self.light = light
        if nest_under and st.get("nest_under") != nest_under:
            st["nest_under"] = nest_under
            self.journal.save_state()

    def _relocate(self, old_root: str) -> None:
        """Make the journal of a run copied or moved from ``old_root`` this run's own: a
        new MLflow identity, the default store re-pointed here, the copied store set aside
        (its artefact locations name ``old_root``)."""
        st = self.journal.state
        rel = _sqlite_inside(st.get("uri") or "", old_root)
        if rel is not None:  # a store inside the other directory: this run has its own
            st["uri"] = f"sqlite:///{self.root / rel}"
        st["uid"] = uuid.uuid4().hex
        st.pop("targets", None)
        st.pop("nest_under", None)
        aside = [p for p in (self.root / "mlflow.db", self.root / "mlartifacts") if p.exists()]
        where = ""
        if aside:
            dest = (self.root / "tracking"
                    / f"relocated-{time.strftime('%Y%m%dT%H%M%S')}-{st['uid'][:8]}")
            dest.mkdir(parents=True)
            for p in aside:
                p.rename(dest / p.name)
            where = f"; the copied MLflow store is kept in {dest}"
        st["root"] = self.layout.root
        self.journal.save_state()
        logger.warning("run %s was made in %s (copied or moved): its MLflow record starts "
                       "afresh from its journal, never touching the other directory%s",
                       self.layout.root, old_root, where)

    # -- recording (driver side) -------------------------------------------------------
    @property
    def run_id(self) -> str | None:
        """MLflow id of the parent run at this tracking URI (None until pushed)."""
        return self._target().get("runs", {}).get("parent")

    def start(self, cfg: Config) -> None:
        """Journal the params (once) and mark the parent run RUNNING."""
        self.params("params", cfg.to_dict())
        self.journal.append({"key": None, "run": "parent", "type": "status",
                             "status": "RUNNING"})
        self.push()

    def params(self, key: str, values: dict[str, Any]) -> None:
        """Journal params of the parent run once (lists and dicts as JSON)."""
        params = {k: json.dumps(v) if isinstance(v, (list, tuple, dict)) else str(v)
                  for k, v in values.items()}
        self.journal.append({"key": key, "run": "parent", "type": "params", "params": params})

    def metrics(self, key: str, values: dict[str, float], step: int = 0) -> None:
        """Journal scalar metrics of the parent run once (NaN/None left out)."""
        rows = [(k, _number(v), step) for k, v in values.items() if _number(v) is not None]
        self._metrics(key, "parent", rows)

    def stage_done(self, rnd: int, spec: StageSpec, metrics: dict | None,
                   seconds: float) -> None:
        """Journal one finished (or resumed) stage's metrics in the round's run (in a
        light tracker: only its wall time, on the one run)."""
        stage = spec.name
        if self.light:
            self._metrics(f"stage/{rnd}/{stage}", "parent", [(f"time/{stage}", seconds, rnd)])
            return
        rows = stage_metrics(rnd, spec, metrics or {}, seconds)
        self._metrics(f"stage/{rnd}/{stage}", f"round/{rnd}", rows)

    def round_recorded(self, rnd: int) -> bool:
        """Whether round ``rnd`` was journalled already (by this or an earlier driver)."""
        return f"round/{rnd}/end" in self.journal.keys

    def round_done(self, results: RunResults, rnd: int) -> None:
        """Journal a finished round once (a resume does not repeat it): its metrics
        (parent and round run, step = round), its artefacts (overlays, labels,
        detections, detector) and the end of its run."""
        if self.round_recorded(rnd):
            return
        artifacts = [] if self.light else round_artifacts(results, rnd, ROUND_OVERLAYS)
        rows = round_metrics(results.round_row(rnd))
        self._metrics(f"round/{rnd}/parent", "parent", rows, push=False)
        if self.light:
            self.journal.append({"key": f"round/{rnd}/end", "run": "parent", "type": "tags",
                                 "tags": {"pseudocell_rounds_done": str(rnd + 1)}})
        else:
            self._metrics(f"round/{rnd}/metrics", f"round/{rnd}", rows, push=False)
            self._artifacts(f"round/{rnd}/artifacts", f"round/{rnd}", artifacts)
            self.journal.append({"key": f"round/{rnd}/end", "run": f"round/{rnd}",
                                 "type": "status", "status": "FINISHED"})
        self.push()

    def run_done(self, results: RunResults, metrics: dict) -> None:
        """Journal a finished run's final artefacts (config, metrics, plot, model,
        detections, overlays, log) and mark its parent run FINISHED."""
        self.finish(final_artifacts(results, metrics))

    def finish(self, artifacts: list[tuple[str, str]]) -> None:
        """Journal ``(path, artifact folder)`` pairs and mark the parent run FINISHED."""
        if self.light:
            artifacts = [(p, d) for p, d in artifacts if d in ("", "plots")]
        self._artifacts("final/artifacts", "parent", artifacts)
        self.journal.append({"key": None, "run": "parent", "type": "status",
                             "status": "FINISHED"})
        self.push()

    def fail(self, error: BaseException, rnd: int | None = None) -> None:
        """Mark the parent run (and round ``rnd``'s run) FAILED with the error, or
        KILLED for an interrupt: Ctrl-C, or the ``SystemExit`` with which Ray Tune stops
        a trial its scheduler dropped. A later resume sets them RUNNING again."""
        status = "KILLED" if isinstance(error, (KeyboardInterrupt, SystemExit)) else "FAILED"
        message = f"{type(error).__name__}: {error}"[:5000]
        rounds = [f"round/{rnd}"] if rnd is not None and not self.light else []
        for run in ["parent"] + rounds:
            self.journal.append({"key": None, "run": run, "type": "tags",
                                 "tags": {"pseudocell_error": message}})
            self.journal.append({"key": None, "run": run, "type": "status", "status": status})
        self.push()

    def _metrics(self, key: str, run: str, rows: list[tuple[str, float, int]], *,
                 push: bool = True) -> None:
        self.journal.append({"key": key, "run": run, "type": "metrics",
                             "metrics": [[n, v, s] for n, v, s in rows]})
        if push:
            self.push()

    def last_status(self) -> str | None:
        """The parent run's last journalled status (RUNNING, FINISHED, FAILED, KILLED)."""
        for ev in reversed(self.journal.events):
            if ev["type"] == "status" and ev["run"] == "parent":
                return ev["status"]
        return None

    def end(self, status: str) -> None:
        """Journal a terminal status of the parent run (e.g. KILLED for a trial the
        scheduler stopped)."""
        self.journal.append({"key": None, "run": "parent", "type": "status", "status": status})
        self.push()

    def _artifacts(self, key: str, run: str, files: list[tuple[str, str]]) -> None:
        rel = [[os.path.relpath(p, self.root), d] for p, d in files]
        self.journal.append({"key": key, "run": run, "type": "artifacts", "files": rel})

    # -- pushing -----------------------------------------------------------------------
    def _target(self) -> dict:
        return self.journal.state.setdefault("targets", {}).setdefault(self.uri, {})

    def pending(self) -> int:
        """Journalled events not yet pushed to this tracking URI."""
        return len(self.journal.events) - self._target().get("pushed", 0)

    def push(self) -> bool:
        """Push every pending event; True when nothing is left. On the first failure
        warn once and stop pushing in this process (the journal keeps everything)."""
        if self.offline:
            return False
        if not self.pending():
            return True
        try:
            self._push()
            return True
        except Exception as e:  # noqa: BLE001 - any tracking failure must not stop the loop
            self.offline = True
            logger.warning(
                "MLflow tracking at %s failed (%s: %s); the run goes on and keeps its "
                "metrics in %s; push them later with `pseudocell sync %s`",
                self.uri, type(e).__name__, str(e).splitlines()[0][:200] if str(e) else "",
                self.journal.dir, self.layout.root)
            return False

    def ui_pages(self, base: str) -> dict[str, str]:
        """Pages of this run in an MLflow UI served at ``base``: the parent run's metric
        charts (one point per round) and the experiment's runs. Marks the experiment as
        model training, so that MLflow 3 opens its training views, not the GenAI ones."""
        client = self._mlflow()
        exp = self._experiment_id(client)
        client.set_experiment_tag(exp, "mlflow.experimentKind", EXPERIMENT_KIND)
        pages = {"per-round metrics": f"{base}/#/experiments/{exp}/runs/{self.run_id}"
                                      "/model-metrics",
                 "all runs of the experiment": f"{base}/#/experiments/{exp}/runs"}
        return pages if self.run_id else {"runs": pages["all runs of the experiment"]}

    def _mlflow(self):
        if self._client is None:
            os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
            try:
                from mlflow.tracking import MlflowClient
            except ImportError as e:
                raise RuntimeError("MLflow is not installed: pip install "
                                   "'pseudocell[tracking]'") from e
            _probe(self.uri)
            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def _experiment_id(self, client) -> str:
        t = self._target()
        if "experiment_id" not in t:
            exp = client.get_experiment_by_name(self.experiment)
            if exp is None:
                loc = None
                if self.uri.startswith("sqlite:///"):  # artefacts beside the database
                    loc = (Path(self.uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
                t["experiment_id"] = client.create_experiment(
                    self.experiment, artifact_location=loc,
                    tags={"mlflow.experimentKind": EXPERIMENT_KIND})
            else:
                t["experiment_id"] = exp.experiment_id
            self.journal.save_state()
        return t["experiment_id"]

    def _run(self, client, label: str) -> str:
        t = self._target()
        runs = t.setdefault("runs", {})
        if label in runs:
            return runs[label]
        exp = self._experiment_id(client)
        uid = self.journal.state["uid"]
        found = client.search_runs(
            [exp], filter_string=f"tags.pseudocell_uid = '{uid}' and "
                                 f"tags.pseudocell_label = '{label}'", max_results=1)
        if found:
            runs[label] = found[0].info.run_id
        else:
            tags = {"pseudocell_uid": uid, "pseudocell_label": label,
                    "pseudocell_run_dir": self.layout.root}
            if label == "parent":
                name = self.layout.root.rstrip("/").rsplit("/", 1)[-1]
                if self.journal.state.get("nest_under"):
                    tags["mlflow.parentRunId"] = self.journal.state["nest_under"]
            else:
                tags["mlflow.parentRunId"] = self._run(client, "parent")
                name = f"round {int(label.split('/')[1])}"
            runs[label] = client.create_run(exp, run_name=name, tags=tags).info.run_id
        self.journal.save_state()
        return runs[label]

    def _push(self) -> None:
        from mlflow.entities import Metric, Param

        client = self._mlflow()
        t = self._target()
        for ev in self.journal.events[t.get("pushed", 0):]:
            run_id = self._run(client, ev["run"])
            kind = ev["type"]
            if kind == "params":
                items = [Param(k, v) for k, v in ev["params"].items()]
                for i in range(0, len(items), 100):
                    client.log_batch(run_id, params=items[i:i + 100])
            elif kind == "metrics":
                items = [Metric(n, v, ev["ts"], s) for n, v, s in ev["metrics"]]
                for i in range(0, len(items), _MAX_BATCH):
                    client.log_batch(run_id, metrics=items[i:i + _MAX_BATCH])
            elif kind == "artifacts":
                for rel, adir in ev["files"]:
                    path = self.root / rel
                    if path.is_dir():
                        client.log_artifacts(run_id, str(path), adir or None)
                    elif path.exists():
                        client.log_artifact(run_id, str(path), adir or None)
                    else:
                        logger.warning("artefact %s is gone; not logged", path)
            elif kind == "tags":
                for k, v in ev["tags"].items():
                    client.set_tag(run_id, k, v)
            elif kind == "status":
                if ev["status"] == "RUNNING":
                    client.update_run(run_id, status="RUNNING")
                else:
                    client.set_terminated(run_id, status=ev["status"], end_time=ev["ts"])
            t["pushed"] = ev["seq"] + 1
            self.journal.save_state()


def sync(run_dir: str | Path, tracking_uri: str | None = None,
         experiment: str | None = None) -> tuple[str, int]:
    """Push a run's journalled tracking events (e.g. after the server was unreachable).

    Returns ``(parent run id, events pushed)``. Raises :class:`RunDirectoryError` when
    the push fails (the journal is kept; run it again later).
    """
    layout = RunLayout(fs.resolve_root(run_dir))
    if not (Path(layout.local_dir) / "tracking" / "events.jsonl").exists():
        raise RunDirectoryError(f"{str(run_dir)!r} has no tracking journal "
                                "(tracking/events.jsonl); is it a pseudocell run?")
    tr = Tracker(layout, tracking_uri=tracking_uri, experiment=experiment)
    n = tr.pending()
    try:
        tr._push()
    except Exception as e:  # noqa: BLE001 - reported with the URI and the fix
        raise RunDirectoryError(f"could not push to MLflow at {tr.uri}: {type(e).__name__}: "
                                f"{e}; check --tracking-uri and try again") from e
    return tr.run_id, n
