"""Table 3 of the paper: code. Train on MBPP, evaluate on HumanEval and on an MBPP-R stand-in.

  python -m score_jax.main --config=experiments/paper_table3.py:<row> \
      --config.model.checkpoint=/path/to/gemma-2-2b-it --workdir=/tmp/table3/<row>_seed0
  python -m score_jax.main --config=experiments/paper_table3.py:<row>,tiny --workdir=/tmp/t3
  python -m score_jax.report /tmp/table3

Rows (the paper's MBPP-R / HumanEval Acc@t1 / Acc@t2 / Delta / Delta i->c / Delta c->i, Gemini
1.0 Pro):
  base         Base model    47.3 / 53.7 / 56.7 /  3.0 /  7.9 / 4.9
  self_refine  Self-Refine   30.7 / 53.7 / 52.5 / -1.2 /  9.8 / 11.0
  pair_sft     Pair-SFT      59.8 / 56.1 / 54.3 / -1.8 /  4.3 / 6.1
  score        SCoRe         60.6 / 52.4 / 64.6 / 12.2 / 15.2 / 3.0

MBPP-R (Ni et al. 2024) repairs PaLM 2's failing MBPP programs, which are not public. The stand-in
is the base model's own failing greedy programs on the MBPP test split, a fixed set shared by
every row: build it once with `--config.job=repair_set` (see README) and pass it to every row as
`--config.eval.repair_set=PATH`; the `repair` evaluation scores one greedy correction turn.
HumanEval pass@k is reported for both attempts.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _paper_common  # noqa: E402

SUITE = ("final", "pass_at_k", "repair")


def get_config(arg: str = ""):
  return _paper_common.table_config("table3", arg, "score_code", SUITE)
