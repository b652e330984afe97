"""Table 1 of the paper: SFT on self-generated traces (MATH), one row per argument.

  python -m score_jax.main --config=experiments/paper_table1.py:<row> \
      --config.model.checkpoint=/path/to/gemma-2-2b-it --workdir=/tmp/table1/<row>_seed0
  python -m score_jax.main --config=experiments/paper_table1.py:<row>,tiny --workdir=/tmp/t1
  python -m score_jax.report /tmp/table1   # the table, with the paper's numbers beside ours

Rows (the paper's Acc@t1 / Acc@t2 / Delta / Delta i->c / Delta c->i, Gemini 1.5 Flash):
  base           Base model        52.6 / 41.4 / -11.2 / 4.6 / 15.8
  star           STaR D_STaR       55.4 / 41.2 / -14.2 / 5.4 / 19.6
  star_plus      STaR D+_STaR      53.6 / 54.0 /   0.4 / 2.6 /  2.2
  pair_sft       Pair-SFT D_SFT    52.4 / 54.2 /   1.8 / 5.4 /  3.6
  pair_sft_plus  Pair-SFT D+_SFT   55.0 / 55.0 /   0.0 / 0.0 /  0.0

Every row is experiments/score_math.py (Gemma 2 2B, MATH 12k -> MATH500, the paper's Table 8
values) with the row's method (score_jax/configs/paper.py). STaR runs 3 collect-then-fit rounds
from the current model; Pair-SFT collects once from the base model; both get SCoRe's update
budget (stage1.steps + stage2.steps updates of train.global_batch rows) and draw the same number
of samples. `,tiny` is the CPU plumbing run (random tiny model).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _paper_common  # noqa: E402


def get_config(arg: str = ""):
  return _paper_common.table_config("table1", arg, "score_math", ("final",))
