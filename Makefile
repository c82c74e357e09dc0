# The two commands of the README. Both create/refresh .venv first (scripts/bootstrap.sh).
.PHONY: run test test-portable bench venv
venv:
	@bash scripts/bootstrap.sh
run: venv
	.venv/bin/actlab search
test: venv
	.venv/bin/lint-imports  # the one-way import flow ([tool.importlinter], DESIGN.md)
	.venv/bin/python -m pytest -q -m "not slow"
	# the PostgreSQL kill tests with separate worker interpreters (skip with a reason when no
	# Debian postgresql binaries are present)
	.venv/bin/python -m pytest -q -rs -m slow tests/executors/test_postgres.py -k "not forked_search"
	@$(MAKE) --no-print-directory test-portable
# The activation and native-kernel tests again on the code paths of other CPUs: PyTorch's AVX2
# and portable dispatch (which also select the AVX2 / portable native builds), then those
# native builds under this machine's own dispatch. Native builds are cached under
# ACTLAB_CACHE (~30 s each, first run only); compiled-mode tests skip under the portable
# dispatch, where actlab refuses that mode (README, Kernels).
PORTABLE = .venv/bin/python -m pytest -q -rfE -m "not slow" -p no:cacheprovider
test-portable: venv
	ATEN_CPU_CAPABILITY=avx2 $(PORTABLE) tests/activations
	ATEN_CPU_CAPABILITY=default $(PORTABLE) tests/activations
	ACTLAB_NATIVE_ISA=AVX2 $(PORTABLE) tests/activations/test_native.py tests/activations/test_extremes.py -k "native or test_native"
	ACTLAB_NATIVE_ISA=AVX2 $(PORTABLE) tests/sparse/test_sparse_kernels.py tests/sparse/test_decode_native.py tests/sparse/test_generate_native.py tests/sparse/test_kernel_head.py
	ACTLAB_NATIVE_ISA=AVX2 $(PORTABLE) tests/layers/test_norm_native.py
	ACTLAB_NATIVE_ISA=AVX2 $(PORTABLE) tests/layers/test_kan_native.py tests/layers/test_af_kan_series.py
	ACTLAB_NATIVE_ISA=DEFAULT $(PORTABLE) tests/activations/test_native.py tests/activations/test_extremes.py -k "native or test_native"
	ACTLAB_NATIVE_ISA=DEFAULT $(PORTABLE) tests/sparse/test_sparse_kernels.py tests/sparse/test_decode_native.py tests/sparse/test_generate_native.py tests/sparse/test_kernel_head.py
	ACTLAB_NATIVE_ISA=DEFAULT $(PORTABLE) tests/layers/test_norm_native.py
	ACTLAB_NATIVE_ISA=DEFAULT $(PORTABLE) tests/layers/test_kan_native.py tests/layers/test_af_kan_series.py
bench: venv
	.venv/bin/python benchmarks/bench_activations.py
