"""score_jax: SCoRe self-correction RL (Kumar et al., ICLR 2025) in JAX/Flax."""

__version__ = "0.1.0"
