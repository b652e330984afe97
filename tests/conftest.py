"""Test setup: 8 simulated CPU devices so every sharded code path runs for real.

SCORE_NUMERICS_PERTURB=1 (or 2) also compiles everything for another CPU's float32 summation
order, so CI can rerun the `numerics` tests and catch a tolerance fitted to one machine (see
tests/numerics.py). Both change the vector width XLA CPU reduces with and drop FMA contraction:
1 = SSE4.2 code (4 lanes), 2 = AVX code (8 lanes) with the legacy fusion emitters. Each moves
a tiny-gemma2 forward's logits by ~1e-4 against the default (AVX-512) code; the device count
does not change a single-device result, and jax_default_matmul_precision is a no-op for float32
on CPU, so neither is a perturbation.
"""

import os

PERTURBATIONS = {
  "0": "",
  "1": "--xla_cpu_max_isa=SSE4_2",
  "2": "--xla_cpu_max_isa=AVX --xla_cpu_use_fusion_emitters=false",
}
_perturb = os.environ.get("SCORE_NUMERICS_PERTURB", "0")
if _perturb not in PERTURBATIONS:
  raise ValueError(f"SCORE_NUMERICS_PERTURB={_perturb!r}: one of {sorted(PERTURBATIONS)}")

# The test processes compile LLVM at -O0. Their programs are tiny models that run for
# milliseconds; compiling them is most of the suite's time, and LLVM's optimisation was ~40% of
# that (a paper row's 50 programs: 19 vs 31-33 s). The default suite took 498 s against 715 s,
# the same run's worker time 946 against 1373 s (2-core AMD EPYC, 2026-12-05). The subprocesses
# that run experiments and benchmarks as a user does (tests/helpers.py, the compare, benchmark
# and training-CLI tests) set XLA_FLAGS of their own, so optimised code stays tested; the other
# subprocesses (the generate, report and preflight CLIs) inherit -O0. A user's XLA_FLAGS win.
TEST_COMPILE_FLAGS = "--xla_backend_optimization_level=0"

# Must happen before jax is imported anywhere in the test session.
os.environ["XLA_FLAGS"] = " ".join(
  [TEST_COMPILE_FLAGS, os.environ.get("XLA_FLAGS", ""), PERTURBATIONS[_perturb]]
  + ["--xla_force_host_platform_device_count=8"]
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# For tests that start JAX subprocesses with their own device count (tests/numerics.py).
os.environ["SCORE_NUMERICS_XLA_FLAGS"] = PERTURBATIONS[_perturb]

import jax  # noqa: E402

# Parity tests with torch assume full-precision float32 matmuls (a no-op on CPU, not on GPU).
jax.config.update("jax_default_matmul_precision", "highest")


def pytest_report_header(config):
  flags = PERTURBATIONS[_perturb] or "none"
  return (
    f"score_jax numerics: SCORE_NUMERICS_PERTURB={_perturb} (XLA flags: {flags}); "
    f"test processes compile with {TEST_COMPILE_FLAGS}"
  )
