# The two commands of the README. Both create/refresh .venv first (scripts/bootstrap.sh).
.PHONY: run test bench venv
venv:
	@bash scripts/bootstrap.sh
run: venv
	.venv/bin/actlab search
test: venv
	.venv/bin/python -m pytest -q -m "not slow"
bench: venv
	.venv/bin/python benchmarks/bench_activations.py
