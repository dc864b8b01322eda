"""Driver of the multi-node test (run in a subprocess: the test process already holds
the session's Ray). A head and three worker nodes on this machine:

* ``gpu``: 1 CPU and the custom resource ``gpu_node`` (stands in for a GPU node);
* ``cpu-a``, ``cpu-b``: 2 CPUs and ``cpu_node`` each.

Training actors ask for ``gpu_node``, predictors for ``cpu_node``. In round 0's
``predict``, every shard of the first attempt holds (a marker file says it is running
and on which node) until a node is removed: a watcher thread removes the node of the
first running shard, so that shard is lost mid-computation and the stage must run again
on the remaining node. Prints one JSON line: where each actor kind ran, the removed
node, the stage retries the executor logged, the stage events and the output digests.

    python tests/orchestrator/_multinode.py RUN_DIR
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _holding_predictor(markers: str):
    """A ``Predictor`` whose round-0 predict shards wait, after marking themselves as
    running on their node, until ``markers/removed`` exists (at most 120 s)."""
    from pseudocell.actors import stage_actors

    class Predictor(stage_actors.actor_class("Predictor")):  # same kind name
        def shard(self, spec, inp, cfg, item, die=False):
            m = Path(markers)
            if (spec.name, inp.round) == ("predict", 0) and not (m / "removed").exists():
                (m / f"running-{self.node_id()}").touch()
                deadline = time.monotonic() + 120
                while not (m / "removed").exists():
                    if time.monotonic() > deadline:
                        raise TimeoutError("no node was removed within 120 s")
                    time.sleep(0.05)
            return super().shard(spec, inp, cfg, item, die)

    return Predictor


def main(run_dir: str) -> None:
    from ray.cluster_utils import Cluster

    from conftest import output_digests, tiny_config
    from pseudocell.actors.stage_actors import actor_class
    from pseudocell.orchestrator import ray_executor
    from pseudocell.orchestrator.ray_executor import RayExecutor, RayOptions
    from pseudocell.orchestrator.run import resume

    cfg = tiny_config()
    markers = Path(run_dir).parent / "multinode-markers"
    markers.mkdir()
    holding = _holding_predictor(str(markers))
    ray_executor.actor_class = lambda kind: holding if kind == "Predictor" else actor_class(kind)
    retries: list[str] = []

    class Retries(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "actor lost" in record.getMessage():
                retries.append(" ".join(record.getMessage().split()[:4]))

    logging.getLogger(ray_executor.__name__).addHandler(Retries())
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "object_store_memory": 128 * 2**20})
    nodes = {"gpu": cluster.add_node(num_cpus=1, resources={"gpu_node": 1},
                                     object_store_memory=96 * 2**20),
             "cpu-a": cluster.add_node(num_cpus=2, resources={"cpu_node": 1},
                                       object_store_memory=96 * 2**20),
             "cpu-b": cluster.add_node(num_cpus=2, resources={"cpu_node": 1},
                                       object_store_memory=96 * 2**20)}
    cluster.wait_for_nodes()
    name_of = {n.node_id: k for k, n in nodes.items()}
    opts = RayOptions(address=cluster.address, train="actor", pool_size=2, warm_up=False,
                      actor_resources={"DetectorTrainer": {"gpu_node": 0.5},
                                       "PUFeatureLearner": {"gpu_node": 0.5},
                                       "Predictor": {"cpu_node": 0.5}})
    out = {"placement": {}, "removed": None, "events": [], "retries": retries}
    stop = threading.Event()

    def remove_a_busy_node() -> None:
        """Remove the node of the first running shard, wait until Ray knows it is dead,
        then let the held shards go."""
        import ray

        try:
            while not stop.is_set():
                running = [name_of.get(p.name[len("running-"):])
                           for p in sorted(markers.glob("running-*"))]
                if running:
                    victim = running[0]
                    out["removed"] = victim
                    cluster.remove_node(nodes[victim], allow_graceful=False)
                    dead, deadline = nodes[victim].node_id, time.monotonic() + 60
                    while any(n["NodeID"] == dead and n["Alive"] for n in ray.nodes()):
                        if time.monotonic() > deadline:
                            raise TimeoutError(f"node {victim} still alive after removal")
                        time.sleep(0.2)
                    return
                time.sleep(0.05)
        except BaseException as e:  # reported in the JSON line
            out["watcher_error"] = repr(e)
        finally:
            (markers / "removed").touch()

    try:
        with RayExecutor(opts) as ex:
            import ray

            def where(actor) -> str:
                return name_of.get(ray.get(actor.node_id.remote()), "head")

            def progress(e) -> None:
                if e.status in ("start", "done"):
                    out["events"].append([e.round, e.stage, e.status])
                if e.status == "start" and e.stage == "train_pu":
                    out["placement"]["Predictor"] = sorted(where(a) for a in ex._pool)
                if e.status == "done" and e.stage in ("train_detector", "train_pu"):
                    kind = "DetectorTrainer" if e.stage == "train_detector" \
                        else "PUFeatureLearner"
                    out["placement"].setdefault(kind, set()).add(where(ex._singletons[kind]))

            watcher = threading.Thread(target=remove_a_busy_node, daemon=True)
            watcher.start()
            try:
                resume(run_dir, ex, progress=progress)
            finally:
                stop.set()
                watcher.join(timeout=70)
        from pseudocell.storage.layout import RunLayout

        out["digests"] = output_digests(RunLayout(run_dir), cfg)
        out["placement"] = {k: sorted(v) for k, v in out["placement"].items()}
    finally:
        cluster.shutdown()
    print(json.dumps(out))

if __name__ == "__main__":
    main(sys.argv[1])
