"""Table 4 of the paper: SCoRe's ablations (MATH), one row per argument.

  python -m score_jax.main --config=experiments/paper_table4.py:<row> \
      --config.model.checkpoint=/path/to/gemma-2-2b-it --workdir=/tmp/table4/<row>_seed0
  python -m score_jax.main --config=experiments/paper_table4.py:<row>,tiny --workdir=/tmp/t4
  python -m score_jax.report /tmp/table4

Rows (the paper's Acc@t1 / Acc@t2 / Delta, Gemini 1.5 Flash):
  score          SCoRe                                   60.0 / 64.4 /  4.4
  single_turn    w/o multi-turn training                 61.8 / 59.4 / -2.4
  no_stage1      w/o Stage I                             59.2 / 61.4 /  2.2
  no_shaping     w/o reward shaping                      60.0 / 62.6 /  2.6
  star_stage2    w/ STaR instead of REINFORCE Stage II   56.2 / 58.4 /  2.2
  offline_turn1  w/o online turn 1 samples               60.4 / 60.6 /  0.2

What each row changes (score_jax/rl/algorithms.py METHODS, score_jax/configs/paper.py):
single_turn trains attempt 1 alone with RL and is evaluated with two attempts; no_stage1 spends
the whole budget in Stage II; no_shaping keeps Stage I and runs Stage II with alpha = 0 (every
attempt rewarded by its own correctness); star_stage2 keeps Stage I and replaces Stage II by
STaR D+ rounds (collect from the current model, keep traces whose second attempt is right, SFT);
offline_turn1 takes every Stage II first attempt from the base model (offline ratio 1.0).
Every row gets SCoRe's update budget.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _paper_common  # noqa: E402


def get_config(arg: str = ""):
  return _paper_common.table_config("table4", arg, "score_math", ("final",))
