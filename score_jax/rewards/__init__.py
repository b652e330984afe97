"""Rewards: the MATH answer checker, the sandboxed code checker and the pool that runs them."""
