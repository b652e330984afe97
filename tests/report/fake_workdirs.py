"""Finished workdirs in the real on-disk format, with per-problem outcomes from a seeded RNG.

`make` writes config.json (the real base config with a paper row applied), metrics.jsonl (the
real MetricWriter) and eval/final.json (+ any optional eval file asked for) and returns the
[b, a] correctness it wrote, so tests can recompute every number independently.
"""

import json
import os
import zlib

import numpy as np

from score_jax import configs
from score_jax.configs import paper
from score_jax.trainer import confidence, metric_writers, metrics


def correctness(rng, n: int, p1: float, i2c: float, c2i: float) -> np.ndarray:
  """[n, 2] bool: attempt 1 right with p1; attempt 2 fixes with i2c and breaks with c2i."""
  t1 = rng.random(n) < p1
  flip = rng.random(n)
  t2 = np.where(t1, flip >= c2i, flip < i2c)
  return np.stack([t1, t2], axis=1)


def _write(path: str, obj) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(obj, f)


def write_config(path: str, row: str, table: str, seed: int) -> None:
  c = paper.apply_row(configs.base_config(), row, table)
  c.seed = seed
  c.stage1.steps, c.stage2.steps, c.train.global_batch = 30, 60, 8
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "config.json"), "w") as f:
    f.write(c.to_json())


def final_json(correct_ba: np.ndarray, ids: list[str], edit_ratios, per_level=None) -> dict:
  m = metrics.self_correction_metrics(correct_ba)
  for name, iv in confidence.bootstrap_intervals(correct_ba, num_resamples=200).items():
    m[f"{name}_ci95_low"], m[f"{name}_ci95_high"] = iv.low, iv.high
  changed = correct_ba[:, 0] != correct_ba[:, 1]
  m |= {"answer_change_rate": float(changed.mean()), "num_examples": float(len(ids))}
  m |= {
    "own_correction_rate": float(
      (~correct_ba[:, 0] & correct_ba[:, 1]).sum() / max(1, (~correct_ba[:, 0]).sum())
    )
  }
  episodes = []
  for i, pid in enumerate(ids):
    ep = {
      "id": pid,
      "attempts": [f"try {k}" for k in range(2)],
      "answers": ["1", "2"],
      "rewards": [float(x) for x in correct_ba[i]],
      "outcomes": [int(x) for x in correct_ba[i]],
    }
    if edit_ratios is not None:
      ep["edit_ratio"] = float(edit_ratios[i])
    episodes.append(ep)
  if edit_ratios is not None:
    m["edit_distance_ratio"] = float(np.mean(edit_ratios))
  out = {"step": 90, "checkpoint": "best", "method": "x", "instruction": "correction"}
  out |= {"metrics": m, "episodes": episodes}
  if per_level:
    out["per_level"] = per_level
  return out


def write_curve(path: str, rng, steps=(0, 30, 60, 90)) -> None:
  writer = metric_writers.MetricWriter(path, tensorboard=False)
  for step in steps:
    stage = "stage1" if step <= 30 else "stage2"
    scalars = {"train/reward_turn1": rng.random(), "train/reward_turn2": rng.random()}
    writer.write(step, scalars, stage=stage)
    writer.write(
      step,
      {f"eval/{k}": rng.random() for k in ("acc@t1", "acc@t2", "answer_change_rate")},
      stage=stage,
    )
  writer.close()


def write_optional(path: str, rng, name: str) -> dict:
  """One optional evaluation file with random but well-formed numbers; returns what it wrote."""
  if name == "attempts":
    m = {}
    for k in range(1, 11):
      acc = 0.4 + 0.02 * k
      m |= {f"acc@t{k}": acc, f"acc@t{k}_ci95_low": acc - 0.05, f"acc@t{k}_ci95_high": acc + 0.05}
    obj = {"step": 90, "num_attempts": 10, "metrics": m | {"num_examples": 50.0}}
  elif name == "scaling":
    budgets = [2, 4, 8, 16]
    par = sorted(rng.random(4))
    seq = [min(1.0, p + 0.05) for p in par]
    obj = {"step": 90, "temperature": 0.7, "budgets": budgets, "parallel": par, "sequential": seq,
           "parallel_ci95": [[p - 0.1, p + 0.1] for p in par],
           "sequential_ci95": [[p - 0.1, p + 0.1] for p in seq], "num_examples": 50}  # fmt: skip
  elif name == "fixed_first":
    m = {
      "acc@t1": 0.3,
      "acc@t2": 0.45,
      "correction_rate": float(rng.random()),
      "num_examples": 50.0,
    }
    obj = {"step": 90, "metrics": m}
  elif name == "pass_at_k":
    obj = {"step": 90, "n": 10, "pass@k_t1": {"1": rng.random(), "5": rng.random()},
           "pass@k_t2": {"1": rng.random(), "5": rng.random()}, "num_examples": 50}  # fmt: skip
  else:
    ok = rng.random(40) < 0.6
    acc = float(ok.mean())
    obj = {"step": 90, "repair_accuracy": acc, "ci95": [acc - 0.04, acc + 0.04], "num_examples": 40,
           "repair_set": "mbpp_r.jsonl"}  # fmt: skip
    if name == "repair_episodes":  # per-problem results, as trainer/repair.py writes them
      name = "repair"
      obj["episodes"] = [{"id": f"r{i}", "attempt": "def f(): pass", "reward": float(x),
                          "outcome": int(x)} for i, x in enumerate(ok)]  # fmt: skip
  _write(os.path.join(path, "eval", f"{name}.json"), obj)
  return obj


def make(root: str, name: str, row: str, table: str, seed: int, *, correct_ba, ids=None,
         optional=(), curve=True, edit=True, per_level=None) -> str:  # fmt: skip
  """A finished workdir root/name; returns its path."""
  path = os.path.join(root, name)
  rng = np.random.default_rng([zlib.crc32(name.encode()), seed])
  write_config(path, row, table, seed)
  ids = ids or [f"p{i}" for i in range(len(correct_ba))]
  edits = rng.random(len(ids)) if edit else None
  _write(os.path.join(path, "eval", "final.json"), final_json(correct_ba, ids, edits, per_level))
  if curve:
    write_curve(path, rng)
  for opt in optional:
    write_optional(path, rng, opt)
  return path
