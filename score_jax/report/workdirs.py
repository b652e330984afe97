"""Reading workdirs: which command-line paths are workdirs, and what a finished one holds.

A workdir is a directory with `config.json`; it is finished when `eval/final.json` exists. A path
that is not a workdir but has workdir subdirectories stands for them (a sweep's parent folder).
Every path that yields no finished workdir becomes a `Missing` entry with its reason, so the
report names it instead of dropping it.

Per-problem correctness comes from final.json's episodes (a reward > 0 is a correct attempt, as
the evaluation scores it); a run without episodes keeps only its aggregate metrics.

Legend: b problems, a attempts.
"""

import dataclasses
import json
import os
from typing import Any

import numpy as np

from score_jax import storage
from score_jax.configs import paper
from score_jax.rl import algorithms
from score_jax.trainer import metric_writers

CONFIG_FILE = "config.json"
REPORT_FILES = ("results.md", "results.json")  # a folder holding both is a report, not a run
FINAL_FILE = os.path.join("eval", "final.json")
# Optional evaluations: name -> file under the workdir.
OPTIONAL_EVALS = {
  name: os.path.join("eval", f"{name}.json")
  for name in ("attempts", "scaling", "fixed_first", "pass_at_k", "repair")
}
# Per-level columns (Figure 7) the report reads from final.json's per_level.
LEVEL_COLUMNS = ("acc@t1", "acc@t2", "delta_i->c(t1,t2)", "delta_c->i(t1,t2)")
# Training-curve scalars kept from metrics.jsonl (the rest are not plotted or tabled).
CURVE_SCALARS = (
  "eval/acc@t1",
  "eval/acc@t2",
  "eval/answer_change_rate",
  "train/reward_turn1",
  "train/reward_turn2",
  "train/answer_change_rate",
  "step/kl_k3_turn1",
  "step/kl_k3_turn2",
)


@dataclasses.dataclass(frozen=True)
class Missing:
  """A path that gave no finished workdir, and why."""

  path: str
  reason: str


@dataclasses.dataclass
class Run:
  """One finished workdir: its identity in the paper's tables and its evaluations."""

  path: str
  method: str
  seed: int
  table: str  # "" when neither the config nor the paper's row names one
  row: str
  task: str
  updates: int  # gradient updates the method's phases get (0: it trains nothing)
  global_batch: int
  metrics: dict[str, float]  # final.json "metrics" (fractions)
  per_level: dict[str, dict[str, float]]
  ids: list[str]  # problem ids in final.json order; [] without episodes
  correct_ba: np.ndarray | None  # [b, a] bool; None without episodes
  edit_ratios: np.ndarray  # [b] attempt 1 vs 2, from the episodes ([] without them)
  evals: dict[str, dict[str, Any]]  # the optional evaluations present, by OPTIONAL_EVALS name
  curve: dict[str, list[tuple[int, float]]]  # CURVE_SCALARS -> (step, value), step order
  notes: list[str]  # optional files that exist but could not be read


def discover(paths: list[str], exclude: tuple[str, ...] = ()) -> tuple[list[str], list[Missing]]:
  """Workdirs named by `paths` (each a workdir or a folder of them) and the paths that are not.

  `exclude` holds directories never taken for workdirs (the report's own output folder);
  earlier reports' folders inside a folder of workdirs are passed over too.
  """
  skip = {storage.realpath(p) for p in exclude}
  found, missing, seen = [], [], set()

  def add(path: str) -> None:
    real = storage.realpath(path)
    if real not in seen:
      seen.add(real)
      found.append(path)

  for path in paths:
    if not storage.exists(path):
      missing.append(Missing(path, "does not exist"))
    elif not storage.isdir(path):
      missing.append(Missing(path, "not a directory"))
    elif storage.isfile(os.path.join(path, CONFIG_FILE)):
      add(path)
    else:
      subs = [os.path.join(path, d) for d in storage.listdir(path)]
      subs = [s for s in subs if storage.isdir(s) and storage.realpath(s) not in skip]
      subs = [s for s in subs if not all(storage.isfile(os.path.join(s, f)) for f in REPORT_FILES)]
      runs = [s for s in subs if storage.isfile(os.path.join(s, CONFIG_FILE))]
      if not runs:
        missing.append(Missing(path, f"no {CONFIG_FILE} (nor in any subdirectory)"))
      for sub in runs:
        add(sub)
      # A folder of workdirs with a stray subdirectory: say so, it may be a run that never began.
      missing += [Missing(s, f"no {CONFIG_FILE}") for s in subs if runs and s not in runs]
  return found, missing


def _read_json(path: str) -> Any:
  return json.loads(storage.read_text(path))


def _field(config: dict[str, Any], dotted: str, default: Any = KeyError) -> Any:
  node: Any = config
  for part in dotted.split("."):
    if not isinstance(node, dict) or part not in node:
      if default is KeyError:
        raise KeyError(f"{CONFIG_FILE} has no {dotted}")
      return default
    node = node[part]
  return node


def _updates(config: dict[str, Any], method: str) -> int:
  """The method's update budget: the steps of every config section its phases train on."""
  if method in algorithms.METHODS:
    sections = {s for _, secs in algorithms.METHODS[method].phases for s in secs}
  else:
    sections = {"stage1", "stage2"}
  return sum(int(_field(config, f"{s}.steps", 0)) for s in sorted(sections))


def _placement(config: dict[str, Any], method: str) -> tuple[str, str]:
  """(table, row) of a run: report.row/table, else the method's row and its first table."""
  row = _field(config, "report.row", "") or method
  table = _field(config, "report.table", "")
  if not table and row in paper.ROWS:
    table = next(iter(paper.ROWS[row].paper))
  return table, row


def _episodes(final: dict[str, Any], where: str):
  """(ids, correct_ba or None, edit_ratios) from final.json's episodes."""
  episodes = final.get("episodes") or []
  if not episodes:
    return [], None, np.zeros(0)
  try:
    ids = [str(ep["id"]) for ep in episodes]
    rewards = [[float(r) for r in ep["rewards"]] for ep in episodes]
    # edit_ratio is null for a one-attempt episode: no ratio, not an unreadable file.
    edits = [ep.get("edit_ratio") for ep in episodes]
    edits = np.array([np.nan if e is None else float(e) for e in edits], np.float64)
  except (KeyError, TypeError, ValueError) as e:
    raise ValueError(f"{where}: malformed episode ({type(e).__name__}: {e})") from e
  # Attempts every episode has: a ragged list keeps its common prefix of attempts.
  a = min(len(r) for r in rewards)
  correct_ba = np.array([r[:a] for r in rewards], np.float64) > 0 if a else None
  return ids, correct_ba, edits[np.isfinite(edits)]


def _curve(path: str, notes: list[str]) -> dict[str, list[tuple[int, float]]]:
  curve: dict[str, list[tuple[int, float]]] = {k: [] for k in CURVE_SCALARS}
  if not storage.isfile(os.path.join(path, metric_writers.METRICS_FILE)):
    return curve
  try:
    records = metric_writers.read_metrics(path)
  except (OSError, ValueError) as e:
    notes.append(f"{metric_writers.METRICS_FILE} unreadable: {e}")
    return curve
  for record in records:
    scalars = record.get("scalars") or {}
    for key in CURVE_SCALARS:
      if scalars.get(key) is not None:
        curve[key].append((int(record["step"]), float(scalars[key])))
  return {k: sorted(v) for k, v in curve.items()}


def _nums(x: Any) -> bool:
  return isinstance(x, list) and all(isinstance(v, (int, float)) for v in x)


# What the report reads of each optional evaluation: a file without it is named, not used.
_USABLE = {
  "attempts": lambda d: isinstance(d["metrics"]["acc@t1"], (int, float)),
  "scaling": lambda d: (
    _nums(d["budgets"])
    and _nums(d["parallel"])
    and _nums(d["sequential"])
    and len(d["budgets"]) == len(d["parallel"]) == len(d["sequential"]) > 0
  ),
  "fixed_first": lambda d: isinstance(d["metrics"]["correction_rate"], (int, float)),
  "pass_at_k": lambda d: all(isinstance(d.get(f"pass@k_{t}", {}), dict) for t in ("t1", "t2")),
  "repair": lambda d: isinstance(d["repair_accuracy"], (int, float)),
}


def _optional(path: str, notes: list[str]) -> dict[str, dict[str, Any]]:
  evals = {}
  for name, rel in OPTIONAL_EVALS.items():
    if storage.isfile(os.path.join(path, rel)):
      try:
        data = _read_json(os.path.join(path, rel))
        if not _USABLE[name](data):
          raise ValueError("missing or malformed fields")
        episodes = data.pop("episodes", None) or []  # kept out of results.json: final.json-sized
        if name == "repair":
          data["correct"] = {str(e["id"]): float(e["reward"]) > 0 for e in episodes}
        evals[name] = data
      except (OSError, ValueError, KeyError, TypeError) as e:
        notes.append(f"{rel} not used: {type(e).__name__}: {e}")
  return evals


def _levels(final: dict[str, Any], notes: list[str]) -> dict[str, dict[str, float]]:
  out = {}
  for level, m in (final.get("per_level") or {}).items():
    if isinstance(m, dict) and all(isinstance(m.get(c), (int, float)) for c in LEVEL_COLUMNS):
      out[str(level)] = m
    else:
      notes.append(f"{FINAL_FILE}: per_level[{level!r}] lacks {', '.join(LEVEL_COLUMNS)}; not used")
  return out


def load(path: str) -> Run | Missing:
  """The workdir at `path` as a Run, or the reason it is not a finished one."""
  try:
    config = _read_json(os.path.join(path, CONFIG_FILE))
    method, seed = str(_field(config, "rl.method")), int(_field(config, "seed"))
  except (OSError, ValueError, KeyError, TypeError) as e:
    return Missing(path, f"{CONFIG_FILE} unreadable: {e}")
  final_path = os.path.join(path, FINAL_FILE)
  if not storage.isfile(final_path):
    return Missing(path, f"unfinished: no {FINAL_FILE}")
  try:
    final = _read_json(final_path)
    ids, correct_ba, edits = _episodes(final, final_path)
    metrics = {k: float(v) for k, v in final["metrics"].items() if isinstance(v, (int, float))}
  except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
    return Missing(path, f"{FINAL_FILE} unreadable: {e}")
  notes: list[str] = []
  table, row = _placement(config, method)
  return Run(
    path=path,
    method=method,
    seed=seed,
    table=table,
    row=row,
    task=str(_field(config, "data.task", "")),
    updates=_updates(config, method),
    global_batch=int(_field(config, "train.global_batch", 0)),
    metrics=metrics,
    per_level=_levels(final, notes),
    ids=ids,
    correct_ba=correct_ba,
    edit_ratios=edits,
    evals=_optional(path, notes),
    curve=_curve(path, notes),
    notes=notes,
  )


def load_all(paths: list[str], exclude: tuple[str, ...] = ()) -> tuple[list[Run], list[Missing]]:
  """Every finished workdir under `paths` (argument order) and every path that is not one."""
  found, missing = discover(paths, exclude)
  runs = []
  for path in found:
    got = load(path)
    (missing if isinstance(got, Missing) else runs).append(got)
  return runs, missing
