# make demo  -- create .venv, install, run the main job (a 4-budget RISC-V sweep on digits, uniform W8A8/W4A4/W2A2
#              beside it) and its Pareto front
# make test  -- create or refresh .venv and run the test suite (what CI runs)
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
TEST_WORKERS ?= 2
SWEEP ?= multirun/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: install demo test clean riscv-tools

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m experiments.search -m budget.fraction=0.2,0.4,0.6,0.8 hardware=riscv hydra.sweep.dir=$(SWEEP)
	$(PY) -m experiments.search -m 'baseline={kind:uniform,w_bits:8,a_bits:8},{kind:uniform,w_bits:4,a_bits:4},{kind:uniform,w_bits:2,a_bits:2}' hardware=riscv hydra.sweep.dir=$(SWEEP)-uniform
	$(PY) -m experiments.pareto $(SWEEP) $(SWEEP)-uniform --label searched --label uniform --out $(SWEEP)
	@echo "results: $(SWEEP)/<job>/result.json   front: $(SWEEP)/pareto.json  plot: $(SWEEP)/pareto.png  table: $(SWEEP)/pareto.html"

# the C backend's RISC-V build and its CV32E40P simulation (nas.deploy.c; Debian/Ubuntu, as root)
riscv-tools: install
	apt-get update && apt-get install -y gcc-riscv64-unknown-elf verilator
	$(PY) -m pip install -q pythondata-cpu-cv32e40p

test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS)

clean:
	rm -rf outputs multirun
