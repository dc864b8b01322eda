"""Driver of the multi-node test (run in a subprocess: the test process already holds
the session's Ray). A head and three worker nodes on this machine:

* ``gpu``: 1 CPU and the custom resource ``gpu_node`` (stands in for a GPU node);
* ``cpu-a``, ``cpu-b``: 2 CPUs and ``cpu_node`` each.

Training actors ask for ``gpu_node``, predictors for ``cpu_node``. In round 0's
``predict``, every shard of the first attempt reports its node to a gate actor and holds
until the gate opens: a watcher thread takes the first report, removes that node, waits
until Ray counts it gone and opens the gate, so that shard is lost mid-computation and the
stage must run again on the remaining node. Every wait is a blocking call; nothing polls. Prints one JSON line: where each actor kind ran, the removed
node, the stage retries the executor logged, the stage events and the output digests.

    python tests/orchestrator/_multinode.py RUN_DIR
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


GATE = "multinode-gate"


def _gate_class():
    """A Ray actor the held shards and the driver meet at, with blocking calls only:
    shards report their node and wait until the gate opens; the driver waits for the
    first report, removes that node, then opens the gate."""
    import asyncio

    import ray

    @ray.remote(num_cpus=0)
    class Gate:
        def __init__(self) -> None:
            self.running: asyncio.Queue = asyncio.Queue()
            self.opened = asyncio.Event()

        async def arrive(self, node_id: str) -> None:
            await self.running.put(node_id)

        async def first_arrival(self) -> str:
            return await self.running.get()

        async def wait_open(self) -> None:
            await self.opened.wait()

        async def open(self) -> None:
            self.opened.set()

        async def is_open(self) -> bool:
            return self.opened.is_set()

    return Gate


def _holding_predictor():
    """A ``Predictor`` whose round-0 predict shards report their node to the gate and
    wait (at most 120 s) until it opens, i.e. until a node has been removed."""
    from pseudocell.actors import stage_actors

    class Predictor(stage_actors.actor_class("Predictor")):  # same kind name
        def shard(self, spec, inp, cfg, item, die=False):
            import ray

            if (spec.name, inp.round) == ("predict", 0):
                gate = ray.get_actor(GATE)
                if not ray.get(gate.is_open.remote()):
                    gate.arrive.remote(self.node_id())
                    ray.get(gate.wait_open.remote(), timeout=120)
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
    holding = _holding_predictor()
    ray_executor.actor_class = lambda kind: holding if kind == "Predictor" else actor_class(kind)
    retries: list[str] = []

    class Retries(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "actor lost" in record.getMessage():
                retries.append(" ".join(record.getMessage().split()[:4]))

    logging.getLogger(ray_executor.__name__).addHandler(Retries())
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "object_store_memory": 128 * 2**20,
        "resources": {"head": 1}})
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

    def remove_a_busy_node(gate) -> None:
        """Remove the node of the first held shard, wait until Ray counts it gone (Ray's
        own Cluster.wait_for_nodes), then open the gate for the held shards."""
        import ray

        try:
            victim = name_of[ray.get(gate.first_arrival.remote(), timeout=120)]
            out["removed"] = victim
            cluster.remove_node(nodes[victim], allow_graceful=False)
            cluster.wait_for_nodes(timeout=60)
        except BaseException as e:  # reported in the JSON line
            out["watcher_error"] = repr(e)
        finally:
            ray.get(gate.open.remote())

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

            gate = _gate_class().options(name=GATE, resources={"head": 0.01}).remote()
            watcher = threading.Thread(target=remove_a_busy_node, args=(gate,), daemon=True)
            watcher.start()
            try:
                resume(run_dir, ex, progress=progress)
            finally:
                watcher.join(timeout=200)
        from pseudocell.storage.layout import RunLayout

        out["digests"] = output_digests(RunLayout(run_dir), cfg)
        out["placement"] = {k: sorted(v) for k, v in out["placement"].items()}
    finally:
        cluster.shutdown()
    print(json.dumps(out))

if __name__ == "__main__":
    main(sys.argv[1])
