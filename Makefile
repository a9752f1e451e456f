# The two commands a newcomer needs (as root on Debian 12): `make demo`, `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test bench soak asan clean

setup:
	@sh scripts/setup.sh

demo: setup
	$(PY) examples/demo.py

test: setup
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: setup
	$(PY) benchmarks/run.py $(BENCH_ARGS)

soak: setup
	$(PY) -m pytest -q -m soak $(PYTEST_ARGS)

clean:
	rm -rf build *.egg-info aiouring/_native/_uring.* .pytest_cache
