"""Driver of the multi-node test (run in a subprocess: the test process already holds
the session's Ray). A head and three worker nodes on this machine:

* ``gpu``: 1 CPU and the custom resource ``gpu_node`` (stands in for a GPU node);
* ``cpu-a``, ``cpu-b``: 2 CPUs and ``cpu_node`` each.

Training actors ask for ``gpu_node``, predictors for ``cpu_node``. When the first
predict shard of round 0 has finished, the node of the first predictor is removed; the
stage must run again on the remaining node. Prints one JSON line: where each actor kind
ran, the removed node, the stage events and the output digests.

    python tests/orchestrator/_multinode.py RUN_DIR
"""
from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(run_dir: str) -> None:
    from ray.cluster_utils import Cluster

    from conftest import output_digests, tiny_config
    from pseudocell.actors.stage_actors import DetectorTrainer, PUFeatureLearner
    from pseudocell.orchestrator.ray_executor import RayExecutor, RayOptions
    from pseudocell.orchestrator.run import resume

    cfg = tiny_config()
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
    out = {"placement": {}, "removed": None, "events": []}
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
                if (e.status == "progress" and (e.round, e.stage) == (0, "predict")
                        and out["removed"] is None):
                    victim = where(ex._pool[0])
                    out["removed"] = victim
                    cluster.remove_node(nodes[victim], allow_graceful=False)
                    # continue only once Ray knows: its remaining shards (or the next
                    # stage's calls) then hit a dead actor, never a dying one
                    dead = nodes[victim].node_id
                    deadline = time.monotonic() + 60
                    while any(n["NodeID"] == dead and n["Alive"] for n in ray.nodes()):
                        if time.monotonic() > deadline:
                            raise TimeoutError(f"node {victim} still alive after removal")
                        time.sleep(0.2)
                if e.status == "done" and e.stage in ("train_detector", "train_pu"):
                    cls = DetectorTrainer if e.stage == "train_detector" else PUFeatureLearner
                    out["placement"].setdefault(cls.__name__, set()).add(
                        where(ex._singletons[cls]))

            resume(run_dir, ex, progress=progress)
        from pseudocell.storage.layout import RunLayout

        out["digests"] = output_digests(RunLayout(run_dir), cfg)
        out["placement"] = {k: sorted(v) for k, v in out["placement"].items()}
    finally:
        cluster.shutdown()
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
