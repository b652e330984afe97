"""Every row of the paper's tables as data: which method and config values run it, and the
paper's printed numbers for it (ICLR 2025 version; MATH rows are Gemini 1.5 Flash on MATH500,
Table 3 is Gemini 1.0 Pro trained on MBPP and evaluated on MBPP-R and HumanEval).

`apply_row(config, name)` turns a base experiment config into that row's run; the experiment
files (`experiments/paper_table*.py`), the laptop testbed and `python -m score_jax.report` all
read this one table, so a row means the same thing everywhere.

Every trained row gets the same update budget (stage1.steps + stage2.steps updates of
train.global_batch episodes), as the paper fixes "a budget of model samples and gradient
updates" across methods.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import ml_collections

# Columns of the paper's tables, keyed as trainer.evaluate writes them; values in points (%).
T12 = ("acc@t1", "acc@t2", "delta(t1,t2)", "delta_i->c(t1,t2)", "delta_c->i(t1,t2)")
T3 = ("mbpp_r", *T12)
T4 = T12[:3]
TABLES = {
  "table1": ("Table 1: SFT on self-generated traces (MATH)", T12),
  "table2": ("Table 2: MATH (MATH500)", T12),
  "table3": ("Table 3: code (MBPP-R, HumanEval)", T3),
  "table4": ("Table 4: ablations (MATH)", T4),
  "baselines": ("Naive multi-turn RL, both readings (Section 5, Figure 5)", T12),
}


@dataclasses.dataclass(frozen=True)
class Row:
  """One table row: the method and config values that run it and the paper's numbers."""

  name: str
  title: str
  method: str  # a row of rl.algorithms.METHODS
  overrides: Mapping[str, Any]  # dotted config field -> value, applied after the method
  paper: Mapping[str, tuple[float, ...]]  # table -> its columns' numbers (TABLES order)


def _row(name, title, method, paper, **overrides) -> Row:
  return Row(name, title, method, {k.replace("__", "."): v for k, v in overrides.items()}, paper)


_BASE = (52.6, 41.4, -11.2, 4.6, 15.8)
_SCORE = (60.0, 64.4, 4.4, 5.8, 1.4)
ROWS: dict[str, Row] = {
  r.name: r
  for r in (
    _row("base", "Base model", "base", {"table1": _BASE, "table2": _BASE, "table3": (47.3, 53.7, 56.7, 3.0, 7.9, 4.9)}),
    _row("self_refine", "Self-Refine", "self_refine", {"table2": (52.8, 51.8, -1.0, 3.2, 4.2), "table3": (30.7, 53.7, 52.5, -1.2, 9.8, 11.0)}),
    _row("star", "STaR D", "star", {"table1": (55.4, 41.2, -14.2, 5.4, 19.6)}),
    _row("star_plus", "STaR D+", "star_plus", {"table1": (53.6, 54.0, 0.4, 2.6, 2.2), "table2": (53.6, 54.0, 0.4, 2.6, 2.2)}),
    _row("pair_sft", "Pair-SFT D", "pair_sft", {"table1": (52.4, 54.2, 1.8, 5.4, 3.6), "table2": (52.4, 54.2, 1.8, 5.4, 3.6), "table3": (59.8, 56.1, 54.3, -1.8, 4.3, 6.1)}),
    _row("pair_sft_plus", "Pair-SFT D+", "pair_sft_plus", {"table1": (55.0, 55.0, 0.0, 0.0, 0.0)}),
    _row("score", "SCoRe", "score", {"table2": _SCORE, "table3": (60.6, 52.4, 64.6, 12.2, 15.2, 3.0), "table4": _SCORE[:3]}),
    _row("single_turn", "w/o multi-turn training", "single_turn", {"table4": (61.8, 59.4, -2.4)}),
    _row("no_stage1", "w/o Stage I", "no_stage1", {"table4": (59.2, 61.4, 2.2)}),
    _row("no_shaping", "w/o reward shaping", "no_shaping", {"table4": (60.0, 62.6, 2.6)}),
    _row("star_stage2", "w/ STaR instead of REINFORCE Stage II", "star_stage2", {"table4": (56.2, 58.4, 2.2)}),
    # All of Stage II's first attempts from the base model ("w/o online turn 1 samples").
    _row("offline_turn1", "w/o online turn 1 samples", "score", {"table4": (60.4, 60.6, 0.2)}, stage2__offline_first_attempt_ratio=1.0),
    _row("naive_multiturn", "Naive multi-turn RL (reward on t2)", "naive_multiturn", {"baselines": ()}),
    _row("naive_multiturn_eq1", "Naive multi-turn RL (Eq. 1, both rewarded)", "naive_multiturn_eq1", {"baselines": ()}),
  )
}  # fmt: skip


def rows_of(table: str) -> list[Row]:
  """The rows the paper prints in `table`, in the paper's order."""
  if table not in TABLES:
    raise ValueError(f"unknown table {table!r}; known: {', '.join(TABLES)}")
  order = {
    "table1": ("base", "star", "star_plus", "pair_sft", "pair_sft_plus"),
    "table2": ("base", "self_refine", "star_plus", "pair_sft", "score"),
    "table3": ("base", "self_refine", "pair_sft", "score"),
    "table4": ("score", "single_turn", "no_stage1", "no_shaping", "star_stage2", "offline_turn1"),
    "baselines": ("naive_multiturn", "naive_multiturn_eq1"),
  }[table]
  return [ROWS[n] for n in order]


def get_row(name: str) -> Row:
  if name not in ROWS:
    raise ValueError(f"unknown paper row {name!r}; known: {', '.join(ROWS)}")
  return ROWS[name]


def apply_row(
  config: ml_collections.ConfigDict, name: str, table: str = ""
) -> ml_collections.ConfigDict:
  """`config` set up to run row `name` (its method and overrides, report.table / report.row)."""
  row = get_row(name)
  if table and table not in row.paper:
    raise ValueError(f"row {name!r} is not in {table}; its tables: {', '.join(row.paper)}")
  config.rl.method = row.method
  for dotted, value in row.overrides.items():
    section, field = dotted.split(".")
    config[section][field] = value
  if config.stage2.offline_first_attempt_ratio > 0:
    add_continued_prompt_bucket(config)
  config.report.table = table or next(iter(row.paper))
  config.report.row = name
  return config


def add_continued_prompt_bucket(config: ml_collections.ConfigDict) -> None:
  """Makes room for prompts that already hold attempt 1 and the instruction (Stage II's offline
  first attempts, the fixed_first and repair evaluations): a prompt bucket of max_prompt_len +
  max_new_tokens + the largest append bucket, when no bucket is that long yet."""
  r = config.rollout
  need = r.max_prompt_len + r.max_new_tokens + max(r.append_buckets)
  if max(r.prompt_buckets) < need:
    r.prompt_buckets = (*r.prompt_buckets, need)


def parse_experiment_arg(table: str, arg: str) -> tuple[str, bool]:
  """`row` or `row,tiny` (an experiment file's `:arg`) -> (row name, tiny)."""
  parts = [p for p in arg.split(",") if p]
  rows = [p for p in parts if p != "tiny"]
  names = [r.name for r in rows_of(table)]
  if len(rows) != 1 or rows[0] not in names:
    raise ValueError(
      f"{table}: the experiment argument must name one row, optionally with ',tiny' "
      f"(e.g. ':{names[0]},tiny'); got {arg!r}. Rows: {', '.join(names)}"
    )
  return rows[0], "tiny" in parts
