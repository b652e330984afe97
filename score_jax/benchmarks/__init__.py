"""Benchmarks that print their figures: `python -m score_jax.benchmarks <name> [flags]`.

compaction, packing, rewards, sampler, train_step (see `__main__`); every comparison is a ratio
measured in one run on one machine.
"""
