"""Testbed v2's report: the grid's evaluated rows -> tables with spread and CIs, and findings.

Reads what score_jax.testbed.grid wrote under DIR (each run's final evaluation in
DIR/eval/<method>/p<p>_s<s>.json, its other evaluations in DIR/runs/<...>/eval/) and writes
DIR/report/results.md and results.json: the main task's table, the held-out variant's table
beside it, the tuning on validation, and the pre-registered findings, every number computed
from the per-problem rows.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from score_jax.report import seeds as seed_report
from score_jax.testbed import findings
from score_jax.trainer import evaluate as evaluate_lib

# (header, statistic): the table's columns, each a findings.Stat over a run's problems.
COLUMNS = (
  ("Acc@t1", findings.acc(1)),
  ("Acc@t2", findings.acc(2)),
  ("Δ(t1,t2)", findings.delta),
  ("P(change | wrong)", findings.change_given_wrong),
  ("P(change | right)", findings.change_given_right),
)
EXTRA_COLUMNS = (
  ("Vote of 2 samples", findings.vote2, "vote2"),
  ("One attempt, 2x tokens", findings.long1, "long1"),
  ("Fixes base's wrong t1", findings.fixed_first_fix, "fixed_first"),
)


def _read(path: str) -> dict:
  with open(path) as f:
    return json.load(f)


def _episode_rows(episodes: list[dict]) -> dict[str, Any]:
  same = evaluate_lib.answers_equal("math")
  return {
    "ids": [e["id"] for e in episodes],
    "correct": [[r > 0 for r in e["rewards"]] for e in episodes],
    "changed": [not same(*e["answers"][:2]) for e in episodes],
  }


def _aligned(ids: list[str], other_ids: list[str], values: list) -> list:
  where = dict(zip(other_ids, values))
  missing = [i for i in ids if i not in where]
  if missing:
    raise ValueError(f"evaluation rows missing for {len(missing)} problems, e.g. {missing[0]}")
  return [where[i] for i in ids]


def load_runs(workdir: str, names: list[str]) -> tuple[list[dict], list[dict]]:
  """(main-task runs, held-out runs) in findings' format, from the grid's evaluation files."""
  main, held = [], []
  for name in names:
    method, tail = name.split("/")
    pseed, seed = (int(x[1:]) for x in tail.split("_"))
    head = {"method": method, "pretrain_seed": pseed, "seed": seed}
    run = {
      **head,
      **_episode_rows(_read(os.path.join(workdir, "eval", f"{name}.json"))["episodes"]),
    }
    evals = os.path.join(workdir, "runs", name, "eval")
    vote_path = os.path.join(evals, "scaling_vote2.json")  # testbed.vote_methods only
    if os.path.exists(vote_path):
      vote = _read(vote_path)["per_problem"]
      run["vote2"] = _aligned(run["ids"], vote["ids"], [v[0] for v in vote["parallel"]])
    long_path = os.path.join(evals, "final_long1.json")
    if os.path.exists(long_path):
      long1 = _read(long_path)["episodes"]
      first = [e["rewards"][0] > 0 for e in long1]
      run["long1"] = _aligned(run["ids"], [e["id"] for e in long1], first)
    ff_path = os.path.join(evals, "fixed_first.json")
    if os.path.exists(ff_path):
      ff = _read(ff_path)["episodes"]
      rows = [[r > 0 for r in e["rewards"][:2]] for e in ff]
      run["fixed_first"] = _aligned(run["ids"], [e["id"] for e in ff], rows)
    main.append(run)
    held_eps = _read(os.path.join(evals, "final_heldout.json"))["episodes"]
    held.append({**head, **_episode_rows(held_eps)})
  return main, held


def _cell(s: dict) -> str:
  if not s["n"] or math.isnan(s["mean"]):
    return "-"
  lo, hi = s["ci"]
  sd = f" ± {100 * s['std']:.1f}" if not math.isnan(s.get("std", math.nan)) else ""
  return f"{100 * s['mean']:.1f}{sd} [{100 * lo:.1f}, {100 * hi:.1f}]"


def table(runs: list[dict]) -> str:
  """Markdown: one row per method, mean ± sample std [95% CI] over its runs, in points."""
  methods = list(dict.fromkeys(r["method"] for r in runs))
  # An extra column shows where its evaluation ran (fixed_first: not on the base model itself).
  extra = [(h, s, key) for h, s, key in EXTRA_COLUMNS if any(key in r for r in runs)]
  cols = [(h, s, None) for h, s in COLUMNS] + extra
  lines = [
    # "\\|": a bare pipe inside a header would split the markdown table's column.
    "| method | runs | " + " | ".join(h.replace("|", "\\|") for h, _, _ in cols) + " |",
    "| --- | --- |" + " --- |" * len(cols),
  ]
  for m in methods:
    mine = [r for r in runs if r["method"] == m]
    cells = [
      _cell(findings.summary(mine, m, stat)) if key is None or all(key in r for r in mine) else "-"
      for _, stat, key in cols
    ]
    n = sum(r["method"] == m for r in runs)
    lines.append(f"| {seed_report.display_name(m)} | {n} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def point_text(point: dict) -> str:
  return ", ".join(f"{k.replace(':', '.')}={v}" for k, v in point.items()) or "default"


def _tuning_table(tuning: dict) -> str:
  if not tuning["validation"]:
    points = {point_text(p) for p in tuning["selected"].values()}
    return f"A one-point grid ({', '.join(sorted(points))}): nothing was tuned.\n"
  lines = ["| method | point | Acc@t1 | Acc@t2 | Δ |", "| --- | --- | --- | --- | --- |"]
  for m, rows in tuning["validation"].items():
    for r in rows:
      mark = " (selected)" if r["point"] == tuning["selected"][m] else ""
      point = point_text(r["point"])
      lines.append(
        f"| {m} | {point}{mark} | {r['acc@t1']} | {r['acc@t2']} | {r['delta(t1,t2)']:+} |"
      )
  return "\n".join(lines) + "\n"


def bases_table(drawn: list[dict], min_fix: float) -> str:
  """Every base drawn, the rejected ones too: its validation figures and the gate's verdict."""
  head = (
    f"## Bases drawn (validation split; the gate: forced fix >= {100 * min_fix:.0f}%)\n\n"
    "| pretraining seed | one pass | forced fix | forced keep | always check | verdict |\n"
    "| --- | --- | --- | --- | --- | --- |"
  )
  pct = lambda x: "-" if x is None else f"{100 * x:.1f}"
  rate = lambda x: "-" if x is None else pct(x) + "%"
  lines = [
    f"| {d['pretrain_seed']} | {pct(d['acc@t1'])} | {rate(d['forced_fix_rate'])} | "
    f"{rate(d['forced_keep_rate'])} | {pct(d['acc@t2'])} | "
    f"{'accepted' if d['accepted'] else 'rejected'} |"
    for d in drawn
  ]
  return "\n".join([head, *lines, ""])


def markdown(runs, held, tuning, found, bases: str) -> str:
  return "\n".join(
    [
      "# Testbed v2: the pre-registered grid (test split, scored once per run)\n",
      "Mean ± sample standard deviation over runs [95% CI: runs, then problems, resampled], "
      "in percentage points.\n",
      bases,
      "## Main task\n",
      table(runs),
      "## Held-out variant (never used in design)\n",
      table(held),
      "## Tuning (validation split; pretraining seed "
      f"{tuning['pretrain_seed']}, RL seed {tuning['rl_seed']})\n",
      _tuning_table(tuning),
      "## " + findings.findings_text(found),
    ]
  )


def write(
  workdir: str, names: list[str], tuning: dict, config, drawn: list[dict]
) -> tuple[list[dict], str]:
  """Writes DIR/report/results.md and results.json; returns (findings, markdown)."""
  runs, held = load_runs(workdir, names)
  found = findings.findings(runs, held_out=held)
  bases = bases_table(drawn, config.testbed.base_gate.min_forced_fix)
  md = markdown(runs, held, tuning, found, bases)
  out = os.path.join(workdir, "report")
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "results.md"), "w") as f:
    f.write(md)
  cols = [(h, s, None) for h, s in COLUMNS] + list(EXTRA_COLUMNS)
  has = lambda m, key: key is None or all(key in r for r in runs if r["method"] == m)
  summary = {  # each method's columns that its runs evaluated
    m: {h: findings.summary(runs, m, s) for h, s, key in cols if has(m, key)}
    for m in dict.fromkeys(r["method"] for r in runs)
  }
  payload = {"findings": found, "summary": summary, "tuning": tuning, "bases": drawn}
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(payload, f, indent=1, default=float)
  return found, md


def console_text(md: str) -> str:
  return md
