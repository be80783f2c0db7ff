# make run   : set up and run the whole system on the embedded default (http://127.0.0.1:8501)
# make test  : set up and run the test suite
# make bench : print the benchmark tables
PY := .venv/bin/python
STAMP := .venv/.stamp-requirements

.PHONY: run test bench system-deps clean-data status

$(STAMP): requirements.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	# --no-compile: byte-compiling every installed module was most of a fresh clone's wait (pip
	# took 73-78 s with it, 24-29 s without, four alternating runs on one machine at load 6);
	# Python compiles what the programs import on first use instead.
	$(PY) -m pip install --quiet --no-compile -r requirements.txt
	touch $(STAMP)

# Debian packages the tests need: chromium for the real-browser test of the page, g++ to compile
# the example Arduino sketch against a stand-in for the Arduino API.
system-deps:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  echo "installing Debian's chromium for the browser test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi
	@if ! command -v g++ >/dev/null 2>&1; then \
	  echo "installing Debian's g++ for the example sketch's test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null; \
	fi

run: $(STAMP)
	$(PY) -m workers.launch

# What a running system is doing: each program's state and each board's.
status: $(STAMP)
	@$(PY) -m workers.status

test: $(STAMP) system-deps
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -n 2 --dist loadfile

bench: $(STAMP)
	$(PY) -m bench.run_all

# Refuses while a system runs on the folder: deleting the files under a running store lost its data.
clean-data:
	@if [ -x $(PY) ]; then $(PY) -m workers.launch --check-stopped; fi
	rm -rf data/vigie.duckdb* data/bus.sqlite* data/run data/logs data/supervisor* data/*.log
