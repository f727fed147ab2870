# Everything bootstraps itself: `make test` and `make demo` on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROTOC_VENV := .venv-protoc
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: test demo bench robustness deps venv servers demo-servers proto proto-check lint unit clean help

help:
	@echo "make test   - all tests on real servers (bootstraps venv, deps, servers)"
	@echo "make demo   - replay the incident: a plain client stalls, resilient_etcd recovers"
	@echo "make bench  - the full benchmark run (~20 min): benchmarks/results + docs/benchmarks.md"
	@echo "make robustness - randomized faults under traffic, histories checked by porcupine (30 min)"
	@echo "make servers / proto / lint / unit / clean"

# system tools for the network-namespace scenarios and the socket-option check, and Debian's etcd 3.4
# (an older server the watch tests run against as well) (root + apt only)
deps:
	@need=""; for t in ip:iproute2 iptables:iptables conntrack:conntrack strace:strace /usr/bin/etcd:etcd-server; do \
	  command -v $${t%%:*} >/dev/null 2>&1 || need="$$need $${t##*:}"; done; \
	if [ -n "$$need" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "deps: installing$$need"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need >/dev/null; \
	  else echo "deps: missing$$need (netns tests will be skipped)"; fi; fi

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[testing,dev,kube,metrics,srv]'
	@touch $@

venv: $(STAMP)

$(PROTOC_VENV)/.installed: tools/protoc-requirements.txt
	@test -x $(PROTOC_VENV)/bin/python || $(PYTHON) -m venv $(PROTOC_VENV)
	$(PROTOC_VENV)/bin/python -m pip install -q -r tools/protoc-requirements.txt
	@touch $@

servers:
	@tools/build-servers.sh >/dev/null

# the demo replays the incident on etcd behind toxiproxy: no kube-apiserver to build
demo-servers:
	@tools/build-servers.sh etcd etcdctl toxiproxy >/dev/null

proto: $(PROTOC_VENV)/.installed
	$(PROTOC_VENV)/bin/python tools/gen_proto.py

proto-check: $(PROTOC_VENV)/.installed
	$(PROTOC_VENV)/bin/python tools/gen_proto.py --check

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy resilient_etcd benchmarks

unit: venv
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

test: deps venv $(PROTOC_VENV)/.installed servers lint
	RESILIENT_ETCD_PROTOC_PYTHON=$(PROTOC_VENV)/bin/python $(PY) -m pytest $(PYTEST_ARGS)

demo: deps venv demo-servers
	$(PY) -m benchmarks.demo

# a long randomized-fault run (30 min of faults by default: 30 seeds x 60 s, the three cluster kinds in
# turn), then its table and plot. Seeds stay short so porcupine can decide each history: a 600 s seed
# (550,000 operations) was still undecided after 13 minutes. make robustness ROBUSTNESS_SEEDS=11,12
ROBUSTNESS_SEEDS ?= $(shell seq -s, 101 130)
ROBUSTNESS_DURATION ?= 60
robustness: deps venv servers
	rm -rf robustness-results
	status=0; ROBUSTNESS_SEEDS=$(ROBUSTNESS_SEEDS) ROBUSTNESS_DURATION=$(ROBUSTNESS_DURATION) \
	  $(PY) -m pytest -s -p no:cacheprovider --timeout=0 tests/robustness -k "random_faults or kube" || status=$$?; \
	$(PY) -m tests.robustness.report robustness-results robustness-results/run.png; exit $$status

bench: deps venv servers
	$(PY) -m benchmarks run --out benchmarks/results --docs docs/benchmarks.md

clean:
	rm -rf $(VENV) $(PROTOC_VENV) .pytest_cache .mypy_cache .ruff_cache
