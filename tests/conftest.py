"""Shared fixtures: small real crops from ../shared/data, read at test time (never copied
into the repository)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(os.environ.get("PSEUDOCELL_DATA_DIR",
                            Path(__file__).resolve().parents[1].parent / "shared" / "data"))
BRIGHTFIELD = SHARED / "dwaithe-brightfield-cells"

# no phoning home from the test run (CI has no network beyond the package registries)
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` skip (never fail) where CUDA is absent."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One torch thread for the whole session: deterministic and no oversubscription on
    the 2-core CI machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def require_data(path: Path) -> Path:
    """``path`` under the shared data folder; a missing file fails the test (never a
    silent skip) and says where the data comes from."""
    if not path.exists():
        pytest.fail(f"test data {path} is missing. The data sets live in ../shared/data "
                    "beside the checkout (each folder's README names its source and "
                    "licence), or in the folder $PSEUDOCELL_DATA_DIR names; the bright-field "
                    "demo set is also downloaded into the cache by `pseudocell demo`.",
                    pytrace=False)
    return path


@pytest.fixture(scope="session")
def brightfield_dir() -> Path:
    require_data(BRIGHTFIELD / "001cells.png")
    return BRIGHTFIELD


def load_small_crops(folder: Path):
    """Three 128x160 crops of real bright-field images with their full ground truth.

    Returns (ImageSet, gt table) ready for the run inputs.
    """
    from pseudocell.data.images import points_from_dots, read_raw
    from pseudocell.validation import ImageSet, check_image

    ids, imgs, rows = [], [], []
    for n in (1, 3, 5):
        raw = read_raw(folder / f"{n:03d}cells.png")[100:228, 150:310]
        dots = read_raw(folder / f"{n:03d}dots.png")[100:228, 150:310]
        i = f"{n:03d}crop"
        ids.append(i)
        imgs.append(check_image(raw, name=i))
        rows += [(i, y, x) for y, x in points_from_dots(dots)]
    gt = {"image_id": np.array([r[0] for r in rows], object),
          "y": np.array([r[1] for r in rows], float), "x": np.array([r[2] for r in rows], float)}
    return ImageSet(ids, imgs, [f"crop-{i}" for i in ids]), gt


@pytest.fixture(scope="session")
def small_crops(brightfield_dir):
    """:func:`load_small_crops` of the shared bright-field images."""
    return load_small_crops(brightfield_dir)


def tiny_config():
    """A config that runs a whole round on the crops in a few seconds on one CPU thread."""
    from pseudocell.config import Config

    return Config(rounds=1, unet_widths=(4, 8), detector_iters=20, detector_batch=4,
                  detector_crop=64, peak_threshold=0.05, pu_epochs=3, pu_batch=128,
                  pu_feature_dim=16, alpha=0.1, beta=0.1, extra_radii=(8.0,), device="cpu",
                  num_threads=1)


@pytest.fixture(scope="session")
def tiny_cfg():
    """:func:`tiny_config` (a whole round on the crops in seconds)."""
    return tiny_config()


def _descendants(pid: int) -> set[int]:
    """PIDs of every live descendant of ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def output_digests(layout, cfg) -> dict[str, str]:
    """(round/stage/output) → content sha256 of every stage of a finished run."""
    from pseudocell.orchestrator.run import planned_stages
    from pseudocell.storage.manifest import read_manifest

    out = {}
    for rnd, spec in planned_stages(layout, cfg):
        m = read_manifest(layout.manifest(rnd, spec.name))
        assert m is not None, f"round {rnd} stage {spec.name} has no manifest"
        out.update({f"{rnd}/{spec.name}/{k}": r["sha256"] for k, r in m["outputs"].items()})
    return out


def kill_pids(pids) -> None:
    """SIGKILL each PID that is still alive (orphans of a killed Ray driver)."""
    import signal

    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@pytest.fixture(scope="session")
def ray_address(tmp_path_factory):
    """ONE local Ray cluster for the whole test session (design.md: init costs seconds and
    ~760 MB). Yields its GCS address, which subprocess drivers attach to. At the end Ray is
    shut down and every process it started is killed by PID."""
    import ray

    from pseudocell.orchestrator.ray_executor import LOCAL_RAY_INIT

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(num_cpus=2, **LOCAL_RAY_INIT)
    address = ray.get_runtime_context().gcs_address
    yield address
    started = _descendants(os.getpid())
    ray.shutdown()
    kill_pids(started)


def save_png(path: Path, image: np.ndarray) -> None:
    """A normalised float image (0..1) as an 8-bit PNG (what a user's folder holds)."""
    from PIL import Image

    Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(path)


def write_points_file(path: Path, table: dict) -> None:
    """``image,y,x`` CSV naming each image by its PNG file name."""
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "y", "x"])
        for i, y, x in zip(table["image_id"], table["y"], table["x"]):
            w.writerow([f"{i}.png", y, x])


class RecordingExecutor:
    """LocalExecutor that records every (round, stage) it runs (``ran``) and the config
    fields each stage reads (``reads``), through a config proxy."""

    class _Reads:
        def __init__(self, cfg, seen: set):
            object.__setattr__(self, "_cfg", cfg)
            object.__setattr__(self, "_seen", seen)

        def __getattr__(self, name):
            self._seen.add(name)
            return getattr(self._cfg, name)

    def __init__(self):
        from pseudocell.orchestrator.executors import LocalExecutor

        self.ran: list[tuple[int, str]] = []
        self.reads: dict[tuple[int, str], set] = {}
        self.inner = LocalExecutor()

    def run_stage(self, spec, inp, cfg, progress=None):
        self.ran.append((inp.round, spec.name))
        seen = self.reads.setdefault((inp.round, spec.name), set())
        return self.inner.run_stage(spec, inp, self._Reads(cfg, seen), progress)


def assert_shards_give_the_stage_bytes(layout, spec, cfg, tmp_path, rnd: int = 0,
                                       per_actor: int = 3) -> int:
    """A finished run's sharded stage ``spec`` of round ``rnd``, run again by its actor
    class without Ray: planned for ``per_actor`` shards per actor, the shards run in
    reverse order and merged, it gives the manifest's metrics, output bytes and files.
    Returns the number of shards."""
    from pseudocell.actors.stage_actors import actor_class
    from pseudocell.stages.base import StageInputs
    from pseudocell.storage import fs
    from pseudocell.storage.manifest import checksum, read_manifest

    m = read_manifest(layout.manifest(rnd, spec.name))
    inp = StageInputs(out_dir=str(tmp_path / spec.name), round=rnd, seed=m["seed"],
                      uris={k: layout.uri(v["uri"]) for k, v in m["inputs"].items()})
    fs.makedirs(inp.out_dir)
    actor = actor_class(spec.actor)(threads=1)
    items = actor.plan(spec, inp, cfg, per_actor)
    results = [actor.shard(spec, inp, cfg, it) for it in reversed(items)]
    out = actor.merge(spec, inp, cfg, results)
    assert out.metrics == m["metrics"]
    for name, rec in m["outputs"].items():
        assert checksum(out.uris[name]) == rec["sha256"], name
    assert sorted(fs.list_files(inp.out_dir)) == sorted(
        f for f in fs.list_files(layout.stage_dir(rnd, spec.name)) if f != "_manifest.json")
    return len(items)


def assert_ignored_fields_unread(executor: RecordingExecutor, layout, cfg) -> None:
    """No stage of the run read a config field its spec declares in ``ignores`` (what
    lets runs share it, :mod:`pseudocell.orchestrator.share`)."""
    from pseudocell.orchestrator.run import planned_stages

    specs = {(r, s.name): s for r, s in planned_stages(layout, cfg)}
    assert set(executor.reads) == set(specs)
    for key, seen in executor.reads.items():
        assert not seen & specs[key].ignores, (key, sorted(seen & specs[key].ignores))


class FailOnce:
    """Executor that runs a stage to the end, then raises before its manifest is written
    (as a killed process would), once."""

    def __init__(self, at: tuple[int, str]):
        from pseudocell.orchestrator.executors import LocalExecutor

        self.at, self.fired, self.inner = at, False, LocalExecutor()

    def run_stage(self, spec, inp, cfg, progress=None):
        out = self.inner.run_stage(spec, inp, cfg, progress)
        if (inp.round, spec.name) == self.at and not self.fired:
            self.fired = True
            raise RuntimeError("simulated crash after outputs, before manifest")
        return out


@pytest.fixture(scope="session")
def s3_bucket():
    """A real S3 API on loopback: moto's server on 127.0.0.1 and a free port, with the
    standard AWS environment (credentials, region, ``AWS_ENDPOINT_URL_S3``) pointing at
    it for this session. Yields ``s3://<bucket>``."""
    import socket

    import moto.server as server_mod

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        import boto3

        boto3.client("s3").create_bucket(Bucket="pseudocell-test")
        yield "s3://pseudocell-test"
    finally:
        server.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def write_run_inputs(tmp: Path, small_crops) -> Path:
    """The crops as a user's files: ``tmp/images/*.png``, ``tmp/points.csv`` (30 % of the
    points, seed 0) and ``tmp/gt.csv`` (all of them). Returns the image folder."""
    from pseudocell.data.points import hide_points

    images, gt = small_crops
    img_dir = tmp / "images"
    img_dir.mkdir()
    for i, im in zip(images.ids, images.images):
        save_png(img_dir / f"{i}.png", im)
    write_points_file(tmp / "points.csv", hide_points(gt, 0.3, seed=0))
    write_points_file(tmp / "gt.csv", gt)
    return img_dir


def crop_inputs(small_crops, with_eval: bool = True):
    """RunInputs of the crops: 30 % of the points kept (seed 0), full ground truth, and
    the same crops as held-out images (``with_eval``)."""
    from pseudocell.data.points import hide_points
    from pseudocell.validation import RunInputs

    images, gt = small_crops
    return RunInputs(images, hide_points(gt, 0.3, seed=0), gt,
                     images if with_eval else None, gt if with_eval else None)


def module_name(path: Path) -> str:
    """Dotted module name of a file of the pseudocell package (its stem elsewhere)."""
    import pseudocell

    PKG_ROOT = Path(pseudocell.__file__).resolve().parent
    try:
        rel = path.relative_to(PKG_ROOT.parent).with_suffix("")
    except ValueError:  # a file outside the package (parser self-test)
        return path.stem
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def module_imports(path: Path) -> set[str]:
    """Absolute dotted names imported anywhere in the file (incl. inside functions)."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.add(mod)
            names.update(f"{mod}.{a.name}" for a in node.names if a.name != "*")
        elif isinstance(node, ast.Call):
            # importlib.import_module("x") / __import__("x") with a literal name
            f = node.func
            fname = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if fname in {"import_module", "__import__"} and node.args and \
                    isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                names.add(node.args[0].value)
    return names


def make_review(folder: Path, image: np.ndarray):
    """A small review folder on a real crop, written with the review-folder API (as
    ``pseudocell suggest`` would): two 64 px tiles of ``image`` (original pixels), each
    with three proposed points. Returns the tiles."""
    import json

    from pseudocell.human.files import (Tile, sha256_file, write_manifest_csv,
                                        write_tile_png, write_tile_points)

    (folder / "tiles").mkdir(parents=True)
    (folder / "points").mkdir()
    tiles = [Tile("img_y0_x0", "img", 0, 0, 64, 64, 2.0, "uncertain", "m1"),
             Tile("img_y64_x64", "img", 64, 64, 64, 64, 1.0, "audit", "m1")]
    for t in tiles:
        write_tile_png(folder / "tiles" / f"{t.tile_id}.png",
                       image[t.y0:t.y0 + t.h, t.x0:t.x0 + t.w])
        pts = np.array([[10.0, 10.0], [30.0, 20.0], [50.0, 40.0]]) + [t.y0, t.x0]
        write_tile_points(folder / "points", t, pts, np.array(["proposed"] * 3, object))
    write_manifest_csv(folder / "manifest.csv", tiles)
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    (folder / "review.json").write_text(json.dumps(
        {"run_id": "r", "round": 0, "model_run_id": "m1",
         "files": {f: sha256_file(folder / f) for f in files}}))
    return tiles
