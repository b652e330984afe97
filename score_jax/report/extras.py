"""The sections beyond the paper's columns, reduced over a row's seeds.

Each function takes a row's runs (seed order) and returns plain JSON-ready data, or None when
no run of the row has the evaluation: collapse diagnostics (answer change, edit distance),
MATH per level (Figure 7), corrections of the base model's fixed first attempts vs the model's
own (Figure 4), pass@k and MBPP-R (Table 3), Acc@t1..tK (Figure 8), parallel vs sequential
sampling (Figure 1, right) and the training curves. Rates are in points (%); the edit distance
ratio stays a ratio in [0, 1].

Several seeds of a K-attempt or scaling curve are averaged point by point; their band is the
envelope of the seeds' own 95% intervals (lowest low, highest high), a conservative stand-in
because those evaluations keep no per-problem record to pool.
"""

import re
from typing import Any

import numpy as np

from score_jax.report import workdirs

DIAGNOSTICS = ("answer_change_rate", "edit_distance_ratio", "own_correction_rate")


def _spread(values: list[float]) -> dict[str, Any]:
  return {
    "mean": float(np.mean(values)),
    "min": float(min(values)),
    "max": float(max(values)),
    "per_seed": [float(v) for v in values],
  }


def diagnostics(runs: list[workdirs.Run]) -> dict[str, Any]:
  """Answer change rate and own correction rate (points), edit distance ratio: seed spread."""
  out = {}
  for key in DIAGNOSTICS:
    scale = 1.0 if key == "edit_distance_ratio" else 100.0
    values = [scale * r.metrics[key] for r in runs if key in r.metrics]
    if values:
      out[key] = _spread(values)
  return out


def _level_key(level: str) -> tuple:
  digits = re.findall(r"\d+", level)
  return (int(digits[0]) if digits else 1 << 30, level)


def per_level(runs: list[workdirs.Run]) -> dict[str, Any] | None:
  """Figure 7: per difficulty level, each column's mean over the seeds that report it."""
  levels: dict[str, list[dict[str, float]]] = {}
  for run in runs:
    for level, m in run.per_level.items():
      levels.setdefault(str(level), []).append(m)
  if not levels:
    return None
  out = {}
  for level in sorted(levels, key=_level_key):
    entries = levels[level]
    row = {c: float(np.mean([100 * m[c] for m in entries])) for c in workdirs.LEVEL_COLUMNS}
    row["num_examples"] = float(np.mean([m.get("num_examples", 0) for m in entries]))
    row["seeds"] = len(entries)
    out[level] = row
  return out


def _with(runs: list[workdirs.Run], name: str) -> list[workdirs.Run]:
  return [r for r in runs if name in r.evals]


def fixed_first(runs: list[workdirs.Run]) -> dict[str, Any] | None:
  """Figure 4: the correction rate on the model's own first attempts vs the base model's."""
  have = _with(runs, "fixed_first")
  if not have:
    return None
  fixed = [r.evals["fixed_first"]["metrics"] for r in have]
  out = {"seeds": [r.seed for r in have]}
  out["fixed_correction_rate"] = _spread([100 * m["correction_rate"] for m in fixed])
  own = [100 * r.metrics["own_correction_rate"] for r in have if "own_correction_rate" in r.metrics]
  if own:
    out["own_correction_rate"] = _spread(own)
  for key in ("acc@t1", "acc@t2"):
    if all(key in m for m in fixed):
      out[f"fixed_{key}"] = _spread([100 * m[key] for m in fixed])
  out["num_examples"] = float(fixed[0].get("num_examples", 0))
  return out


def pass_at_k(runs: list[workdirs.Run]) -> dict[str, Any] | None:
  """pass@k of attempt 1 and attempt 2 per k, mean over seeds (points)."""
  have = _with(runs, "pass_at_k")
  if not have:
    return None
  out: dict[str, Any] = {"seeds": [r.seed for r in have], "n": have[0].evals["pass_at_k"].get("n")}
  for turn in ("t1", "t2"):
    per_k: dict[str, list[float]] = {}
    for r in have:
      for k, v in (r.evals["pass_at_k"].get(f"pass@k_{turn}") or {}).items():
        per_k.setdefault(str(k), []).append(100 * float(v))
    out[turn] = {k: _spread(v) for k, v in sorted(per_k.items(), key=lambda kv: int(kv[0]))}
  return out


def repair(runs: list[workdirs.Run]) -> dict[str, Any] | None:
  """MBPP-R: repair accuracy (points); the interval is the eval's own for a single seed."""
  have = _with(runs, "repair")
  if not have:
    return None
  evals = [r.evals["repair"] for r in have]
  out = _spread([100 * e["repair_accuracy"] for e in evals])
  out["seeds"] = [r.seed for r in have]
  out["repair_set"] = evals[0].get("repair_set", "")
  ci = evals[0].get("ci95")
  out["ci95"] = [100 * ci[0], 100 * ci[1]] if len(evals) == 1 and ci else None
  return out


def _band(lows: list, highs: list) -> tuple[list | None, list | None]:
  if any(x is None for x in lows + highs):
    return None, None
  return list(np.min(lows, axis=0)), list(np.max(highs, axis=0))


def _bound(m: dict[str, Any], keys: list[str], side: str) -> list[float] | None:
  names = [f"{key}_ci95_{side}" for key in keys]
  return [100 * m[n] for n in names] if all(n in m for n in names) else None


def attempts(runs: list[workdirs.Run]) -> dict[str, Any] | None:
  """Figure 8: Acc@t1..tK (points), K the fewest attempts any seed evaluated."""
  have = _with(runs, "attempts")
  if not have:
    return None
  ms = [r.evals["attempts"]["metrics"] for r in have]
  k = min(sum(1 for key in m if re.fullmatch(r"acc@t\d+", key)) for m in ms)
  keys = [f"acc@t{j}" for j in range(1, k + 1)]
  acc = [[100 * m[key] for key in keys] for m in ms]
  low, high = _band(*([_bound(m, keys, side) for m in ms] for side in ("low", "high")))
  out = {"k": list(range(1, k + 1)), "mean": list(np.mean(acc, axis=0)), "low": low, "high": high}
  out["seeds"] = [r.seed for r in have]
  return _floats(out)


def scaling(runs: list[workdirs.Run]) -> dict[str, Any] | None:
  """Figure 1 (right): parallel vs sequential accuracy per sample budget (points).

  Seeds whose budgets differ from the first seed's are left out of the mean and named.
  """
  have = _with(runs, "scaling")
  if not have:
    return None
  budgets = [int(b) for b in have[0].evals["scaling"]["budgets"]]
  same = [r for r in have if [int(b) for b in r.evals["scaling"]["budgets"]] == budgets]
  out: dict[str, Any] = {"budgets": budgets, "seeds": [r.seed for r in same]}
  out["left_out"] = [r.path for r in have if r not in same]
  for kind in ("parallel", "sequential"):
    evals = [r.evals["scaling"] for r in same]
    out[kind] = list(np.mean([[100 * v for v in e[kind]] for e in evals], axis=0))
    cis = [e.get(f"{kind}_ci95") for e in evals]
    lows = [[100 * c[0] for c in ci] if ci else None for ci in cis]
    highs = [[100 * c[1] for c in ci] if ci else None for ci in cis]
    out[f"{kind}_low"], out[f"{kind}_high"] = _band(lows, highs)
  out["temperature"] = have[0].evals["scaling"].get("temperature")
  return _floats(out)


def curves(runs: list[workdirs.Run]) -> dict[str, Any] | None:
  """Training curves per scalar: per-seed points and the mean over seeds at each step.

  Values stay as logged (fractions, rewards), not points.
  """
  out = {}
  for key in workdirs.CURVE_SCALARS:
    per_step: dict[int, list[float]] = {}
    for run in runs:
      for step, value in run.curve[key]:
        per_step.setdefault(step, []).append(value)
    if per_step:
      steps = sorted(per_step)
      out[key] = {
        "steps": steps,
        "mean": [float(np.mean(per_step[s])) for s in steps],
        "per_seed": {str(r.seed): [list(p) for p in r.curve[key]] for r in runs if r.curve[key]},
      }
  return out or None


def _floats(x: Any) -> Any:
  """numpy scalars inside lists and dicts as Python floats (for json)."""
  if isinstance(x, dict):
    return {k: _floats(v) for k, v in x.items()}
  if isinstance(x, list):
    return [_floats(v) for v in x]
  return float(x) if isinstance(x, np.floating) else x
