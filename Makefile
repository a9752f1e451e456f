# Shortcuts for the scripts in scripts/ (the README's commands need no make).
.PHONY: setup demo test bench soak clean

setup:
	sh scripts/setup.sh

demo:
	sh scripts/demo.sh

test:
	sh scripts/test.sh $(PYTEST_ARGS)

bench:
	sh scripts/bench.sh $(BENCH_ARGS)

soak:
	sh scripts/test.sh -m soak $(PYTEST_ARGS)

clean:
	rm -rf build *.egg-info aiouring/_native/_uring.* .pytest_cache
