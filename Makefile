# Two entry points for a fresh machine (see README): `make study` and `make test`.
# Each creates its own virtualenv in .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN ?= runs/toy-quickstart

.PHONY: study test install clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# the CPU build of torch (pip takes the wheel on disk here; plain `torch` would pull a CUDA build)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/.installed

# The whole study on the toy world: sample -> verify -> fit (+ plots) -> report.
study: install
	$(BIN)/study sample --out $(RUN)
	$(BIN)/study verify $(RUN)
	$(BIN)/study fit $(RUN)
	$(BIN)/study report $(RUN)

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
