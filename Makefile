# Two entry points: `make demo` (the whole system end to end) and `make test` (the suite).
# Both create .venv and install what they need on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.streamrec-installed
DURATION ?= 60

.PHONY: demo test bench install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	@# MovieLens-100K ships inside recbole; its own dependencies are heavy and unused here.
	$(PY) -m pip install -q --no-deps recbole==1.2.1
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/streamrec demo --duration $(DURATION)

test: $(STAMP)
	$(VENV)/bin/pytest

bench: $(STAMP)
	$(PY) benchmarks/throughput.py

clean:
	rm -rf $(VENV) .pytest_cache runs
