# troupe — two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
INPUT  ?= Should cities ban cars?
SCENARIO ?= debate

.PHONY: setup run test bench serve clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-metagpt.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "troupe needs Python 3.11 (metagpt 0.8.2 requires <3.12)"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-metagpt.txt
	touch $(STAMP)

run: setup
	TROUPE_LLM=$${TROUPE_LLM:-fake} $(PY) -m infra.local run --scenario "$(SCENARIO)" "$(INPUT)"

test: setup
	OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q -p no:cacheprovider tests

bench: setup
	TROUPE_LLM=fake $(PY) -m bench.orchestration

serve: setup
	TROUPE_LLM=$${TROUPE_LLM:-fake} $(PY) -m infra.local serve --port 8000 --data data

clean:
	rm -rf $(VENV) data
