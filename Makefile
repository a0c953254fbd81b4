# The two commands of the README: `make demo` (every stage of the tiny pipeline on CPU) and `make test`.
.PHONY: venv demo test test-fast clean

venv:
	@bash scripts/bootstrap.sh

demo: venv
	.venv/bin/octomega pipeline tiny

test: venv
	.venv/bin/python -m pytest -q

# Skips tests marked slow (CI runs them all).
test-fast: venv
	.venv/bin/python -m pytest -q -m "not slow"

clean:
	rm -rf runs pipeline_out .pytest_cache
