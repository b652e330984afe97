"""Table 2 of the paper (MATH500) and its figures, one row per argument.

  python -m score_jax.main --config=experiments/paper_table2.py:<row> \
      --config.model.checkpoint=/path/to/gemma-2-2b-it --workdir=/tmp/table2/<row>_seed0
  python -m score_jax.main --config=experiments/paper_table2.py:<row>,tiny --workdir=/tmp/t2
  python -m score_jax.report /tmp/table2

Rows (the paper's Acc@t1 / Acc@t2 / Delta / Delta i->c / Delta c->i, Gemini 1.5 Flash):
  base         Base model                 52.6 / 41.4 / -11.2 / 4.6 / 15.8
  self_refine  Self-Refine                52.8 / 51.8 /  -1.0 / 3.2 /  4.2
  star_plus    STaR w/ D+_STaR            53.6 / 54.0 /   0.4 / 2.6 /  2.2
  pair_sft     Pair-SFT w/ D_SFT          52.4 / 54.2 /   1.8 / 5.4 /  3.6
  score        SCoRe                      60.0 / 64.4 /   4.4 / 5.8 /  1.4

Each row also runs the evaluations behind the paper's figures on its final checkpoint: the
10-attempt curve (Figure 8: base 53 -> ~45-52 noisy, Pair-SFT flat ~53-54, SCoRe 59, 64, ~65-66
plateau), self-consistency scaling at temperature 0.7 (Figure 1 right: at 32 samples parallel
+7.4 points, K samples each corrected once +10.5), corrections of the base model's fixed first
attempts (Figure 4), and the edit-distance ratios of final.json (Figure 3).
Self-Refine trains nothing: its second turn asks for feedback, then a refined solution.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _paper_common  # noqa: E402

SUITE = ("final", "attempts", "scaling", "fixed_first")


def get_config(arg: str = ""):
  return _paper_common.table_config("table2", arg, "score_math", SUITE)
