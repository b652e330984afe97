"""Benchmarks: `python -m score_jax.benchmarks <name> [flags]`. Each prints its own figures.

Every comparison a benchmark reports is a ratio measured in one run on one machine.
"""

import importlib
import sys

from score_jax.parallel import platforms

# name -> module under score_jax.benchmarks exposing `main(argv)`.
BENCHMARKS = {
  "compaction": "score_jax.benchmarks.compaction",
  "packing": "score_jax.benchmarks.packing",
  "rewards": "score_jax.benchmarks.rewards",
  "rl_step": "score_jax.benchmarks.rl_step",
  "sampler": "score_jax.benchmarks.sampler",
  "train_step": "score_jax.benchmarks.train_step",
}


def main() -> None:
  if len(sys.argv) < 2 or sys.argv[1] not in BENCHMARKS:
    names = ", ".join(sorted(BENCHMARKS))
    sys.exit(f"usage: python -m score_jax.benchmarks <{names}> [flags]")
  name = sys.argv[1]
  platforms.skip_absent_tpu()
  importlib.import_module(BENCHMARKS[name]).main([f"score_jax.benchmarks {name}", *sys.argv[2:]])


if __name__ == "__main__":
  main()
