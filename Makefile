# pseudocell — every target creates/refreshes .venv with the pinned dependencies first.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEMO_OUT ?= runs/demo
TORCH_INDEX ?=

.PHONY: demo test test-slow test-all bench bench-quick bench-quality bench-label-free bench-adapt bench-human bench-perf bench-executor bench-tune bench-tune-share bench-detect bench-precision clean

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "error: $(PY) not found; install Python 3.11 or run 'make PY=/path/to/python3.11 ...'"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned; set TORCH_INDEX to PyTorch's CPU wheel index on machines
	# where the default index would serve a multi-GB CUDA build
	$(BIN)/python -m pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	# ray, tracking (MLflow) and s3 (s3fs; moto for its tests) are part of `make test`
	$(BIN)/python -m pip install --quiet -e '.[test,ray,tracking,s3]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pseudocell demo --out $(DEMO_OUT) --force

# the fast tier (CI, under 8 minutes on 2 cores): everything not marked slow, including
# the Ray executor's bit-for-bit equality with the local one (partial mode)
test: $(STAMP)
	$(BIN)/python -m pytest -q

# sweeps, killed actors and drivers on Ray, the full per-stage fault chain, the other
# modes and the golden run on Ray, multi-node, S3 server runs, the MLflow UI, the full
# golden run

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ''

bench: $(STAMP)
	$(BIN)/pseudocell bench --out runs/bench

bench-quick: $(STAMP)
	$(BIN)/pseudocell bench --quick --out runs/bench-quick

bench-quality: $(STAMP)
	$(BIN)/pseudocell bench --datasets benchmarks/datasets.toml --config benchmarks/quality_config.toml --seeds 3 --out runs/bench-quality

bench-label-free: $(STAMP)
	$(BIN)/pseudocell bench --protocol label-free --datasets benchmarks/datasets.toml --config benchmarks/quality_config.toml --seeds 3 --out runs/bench-label-free --reference runs/bench-quality

bench-adapt: $(STAMP)
	$(BIN)/pseudocell bench --protocol adapt --datasets benchmarks/datasets.toml --config benchmarks/adapt_config.toml --seeds 3 --out runs/bench-adapt --pair u2os:nih3t3 --pair nih3t3:u2os@half-magnification

bench-human: $(STAMP)
	$(BIN)/pseudocell bench --protocol human --datasets benchmarks/datasets.toml --only brightfield --only u2os --config benchmarks/human_warm_config.toml --seeds 3 --out runs/bench-human

bench-perf: $(STAMP)
	$(BIN)/python benchmarks/perf.py --out runs/bench_perf.json

bench-executor: $(STAMP)
	$(BIN)/python benchmarks/executor_overhead.py --out runs/bench_executor.json

# detect on 100 and 1,000 synthesised 512x512 images, local and Ray Data engines, against
# the bare model (images in /tmp/pseudocell_detect_scale; add DETECT_SIZES=1000,10000 for the full set)
DETECT_SIZES ?= 100,1000
bench-detect: $(STAMP)
	$(BIN)/python benchmarks/detect_scale.py --sizes $(DETECT_SIZES) --out runs/bench_detect_scale.json

# prediction in bfloat16 against float32: held-out F1 and images/s (the GPU when there is one)
bench-precision: $(STAMP)
	$(BIN)/python benchmarks/precision.py --out runs/bench_precision.json

bench-tune: $(STAMP)
	$(BIN)/python benchmarks/tune.py --out runs/bench_tune --samples 6

bench-tune-share: $(STAMP)
	$(BIN)/python benchmarks/tune_share.py --out runs/bench_tune_share --samples 6

clean:
	rm -rf $(VENV) runs .pytest_cache
