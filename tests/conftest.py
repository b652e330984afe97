"""Test setup: 8 simulated CPU devices so every sharded code path runs for real."""

import os

# Must happen before jax is imported anywhere in the test session.
os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

# Parity tests compare float32 results at 1e-4..1e-5; keep matmuls in full precision.
jax.config.update("jax_default_matmul_precision", "highest")
