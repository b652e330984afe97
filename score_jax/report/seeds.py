"""Results over seeds: per-seed evaluations -> the paper-style table and three diagnostic plots
(the laptop testbed's report and the compare job's, score_jax.testbed and score_jax.compare).

Input is plain (JSON-serialisable) data, one dict per (method, seed) run:
  {"method": "base" | "score" | "naive" | ..., "seed": int,
   "metrics": the dict `evaluate.evaluate` returns (fractions in [0, 1]),
   "edit_ratios": [per held-out problem edit-distance ratio, attempt 1 vs 2],
   "answer_changed": [per held-out problem: attempt 2's answer differs] (optional),
   "curve": [{"step", "phase", "acc@t1", "acc@t2"}, ...]}   (training-time evaluations)

`summarize` reduces seeds to mean and population std in percentage points; `markdown_table` /
`format_table_for_console` print them like the paper's Table 2; `findings` checks the paper's
qualitative findings on them (base Delta <= 0, SCoRe's gain, naive RL's collapse);
`plot_curves`, `plot_flips` and `plot_edit_ratios` draw accuracy per attempt over training, the
i->c / c->i flips, and the Figure 3-style histogram of how much attempt 2 edits attempt 1
(mass at 0 = it copies).
`write_report` writes all of them to a directory. matplotlib is imported inside the plotting
functions (Agg backend) so importing this module stays cheap.
"""

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from score_jax.configs import paper
from score_jax.report import figures

Run = dict[str, Any]
Row = dict[str, Any]

DISPLAY_NAMES = {
  "base": "Base model",
  "score": "SCoRe (Stage I + II)",
  "naive": "Naive multi-turn RL",
}
# (row field, key in the evaluate metrics, table header, signed): the columns of Table 2.
COLUMNS = (
  ("acc_t1", "acc@t1", "Acc@t1", False),
  ("acc_t2", "acc@t2", "Acc@t2", False),
  ("delta", "delta(t1,t2)", "Δ(t1,t2)", True),
  ("delta_i2c", "delta_i->c(t1,t2)", "Δ i→c", True),
  ("delta_c2i", "delta_c->i(t1,t2)", "Δ c→i", True),
  ("answer_change", "answer_change_rate", "Answer change", False),
)
FILES = {
  "markdown": "results.md",
  "json": "results.json",
  "curves": "accuracy_curves.png",
  "flips": "flips.png",
  "edit_ratios": "edit_ratios.png",
}


def display_name(method: str) -> str:
  """The name a method is shown under (unknown methods as-is)."""
  if method in DISPLAY_NAMES:
    return DISPLAY_NAMES[method]
  return paper.ROWS[method].title if method in paper.ROWS else method


def _finite(x: Any) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_runs(runs: Sequence[Run]) -> None:
  """One ValueError naming the run index and key of the first malformed field."""
  if not runs:
    raise ValueError("report: no runs")
  seen = {}
  for i, run in enumerate(runs):
    if not isinstance(run, dict):
      raise ValueError(f"runs[{i}]: expected a dict, got {type(run).__name__}")
    for key, kind in (("method", str), ("seed", int), ("metrics", dict)):
      if key not in run:
        raise ValueError(f"runs[{i}]: missing key {key!r}")
      if not isinstance(run[key], kind) or isinstance(run[key], bool):
        raise ValueError(f"runs[{i}][{key!r}]: expected {kind.__name__}, got {run[key]!r}")
    for _, key, _, _ in COLUMNS:
      if key not in run["metrics"]:
        raise ValueError(f"runs[{i}] ({run['method']}, seed {run['seed']}): missing metric {key!r}")
      if not _finite(run["metrics"][key]):
        raise ValueError(
          f"runs[{i}]['metrics'][{key!r}]: not a finite number: {run['metrics'][key]!r}"
        )
    ident = (run["method"], run["seed"])
    if ident in seen:
      raise ValueError(f"runs[{i}]: duplicate (method, seed) {ident}, first at runs[{seen[ident]}]")
    seen[ident] = i
    for j, p in enumerate(run.get("curve") or []):
      for key in ("step", "phase", "acc@t1", "acc@t2"):
        if key not in p:
          raise ValueError(f"runs[{i}]['curve'][{j}]: missing key {key!r}")
      if not _finite(p["acc@t1"]) or not _finite(p["acc@t2"]) or not _finite(p["step"]):
        raise ValueError(f"runs[{i}]['curve'][{j}]: step/acc@t1/acc@t2 not finite: {p!r}")


def _by_method(runs: Sequence[Run]) -> dict[str, list[Run]]:
  groups: dict[str, list[Run]] = {}  # dicts keep insertion order: methods stay in input order
  for run in runs:
    groups.setdefault(run["method"], []).append(run)
  return groups


def summarize(runs: Sequence[Run]) -> list[Row]:
  """One row per method (input order): seeds, and mean / population std of each column, in %.

  Row keys: method, name, num_seeds, seeds, and `<field>_mean`, `<field>_std` for each field of
  COLUMNS (acc_t1, acc_t2, delta, delta_i2c, delta_c2i, answer_change).
  """
  _check_runs(runs)
  rows = []
  for method, group in _by_method(runs).items():
    row: Row = {
      "method": method,
      "name": display_name(method),
      "num_seeds": len(group),
      "seeds": [r["seed"] for r in group],
    }
    for field, key, _, _ in COLUMNS:
      pct = 100.0 * np.array([r["metrics"][key] for r in group], np.float64)
      row[f"{field}_mean"] = float(pct.mean())
      row[f"{field}_std"] = float(pct.std())  # ddof=0: a single seed has spread 0, not NaN
    rows.append(row)
  return rows


def findings(rows: Sequence[Row]) -> list[dict[str, Any]]:
  """The paper's qualitative findings, checked on the seed means (issue 6's targets).

  Each is {"claim", "holds", "measured"}; a finding whose methods were not run is left out.
  Thresholds: base Delta <= 0; SCoRe Delta >= +5 with c->i <= 2 and Acc@t2 >= the base's + 10;
  naive multi-turn RL's Delta at most half of SCoRe's, and a lower answer-change rate (collapse).
  """
  by = {r["method"]: r for r in rows}
  out = []

  def add(claim: str, holds: bool, measured: str) -> None:
    out.append({"claim": claim, "holds": bool(holds), "measured": measured})

  base, score, naive = by.get("base"), by.get("score"), by.get("naive")
  if base:
    d = base["delta_mean"]
    add("base model: a second attempt does not help (Delta <= 0)", d <= 0, f"Delta {_num(d, True)}")
  if score:
    d, c2i = score["delta_mean"], score["delta_c2i_mean"]
    add("SCoRe: Delta >= +5", d >= 5, f"Delta {_num(d, True)}")
    add("SCoRe: few right answers broken (c->i <= 2)", c2i <= 2, f"c->i {c2i:.1f}")
  if score and base:
    t2, b2 = score["acc_t2_mean"], base["acc_t2_mean"]
    add("SCoRe: Acc@t2 >= base Acc@t2 + 10", t2 >= b2 + 10, f"{t2:.1f} vs base {b2:.1f}")
  if score and naive:
    dn, ds = naive["delta_mean"], score["delta_mean"]
    add("naive multi-turn RL: Delta at most half of SCoRe's", dn <= ds / 2,
        f"{_num(dn, True)} vs SCoRe {_num(ds, True)}")  # fmt: skip
    cn, cs = naive["answer_change_mean"], score["answer_change_mean"]
    add("naive multi-turn RL: changes fewer answers than SCoRe (collapse)", cn < cs,
        f"{cn:.1f}% vs SCoRe {cs:.1f}%")  # fmt: skip
  return out


def findings_text(found: Sequence[dict[str, Any]]) -> str:
  """The findings as a markdown checklist, one line each."""
  return "".join(f"- [{'x' if f['holds'] else ' '}] {f['claim']}: {f['measured']}\n" for f in found)


def _num(x: float, signed: bool) -> str:
  s = f"{x:+.1f}" if signed else f"{x:.1f}"
  return s[1:] if s in ("+0.0", "-0.0") else s  # no sign on a value that rounds to zero


def _cells(rows: Sequence[Row]) -> tuple[list[str], list[list[str]]]:
  header = ["Method"] + [h for _, _, h, _ in COLUMNS] + ["Seeds"]
  body = []
  for row in rows:
    cells = [row["name"]]
    for field, _, _, signed in COLUMNS:
      cells.append(f"{_num(row[f'{field}_mean'], signed)} ± {row[f'{field}_std']:.1f}")
    body.append(cells + [str(row["num_seeds"])])
  return header, body


def markdown_table(rows: Sequence[Row]) -> str:
  """The paper-style table (Table 2 columns) as GitHub markdown, mean ± std over seeds in %."""
  header, body = _cells(rows)
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * 7) + "|"]
  lines += ["| " + " | ".join(cells) + " |" for cells in body]
  return "\n".join(lines) + "\n"


def format_table_for_console(rows: Sequence[Row]) -> str:
  """The same table as aligned plain text (method left-aligned, numbers right-aligned)."""
  header, body = _cells(rows)
  widths = [max(len(r[c]) for r in [header, *body]) for c in range(len(header))]

  def line(cells):
    first = cells[0].ljust(widths[0])
    return "  ".join([first] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]).rstrip()

  rule = "  ".join("-" * w for w in widths)
  return "\n".join([line(header), rule] + [line(c) for c in body]) + "\n"


def _mean_curve(group: Sequence[Run], key: str) -> tuple[np.ndarray, np.ndarray]:
  """Mean over the seeds that evaluated at each step (seeds may log different steps)."""
  per_step: dict[float, list[float]] = {}
  for run in group:
    for p in run.get("curve") or []:
      per_step.setdefault(p["step"], []).append(100.0 * p[key])
  steps = np.array(sorted(per_step), np.float64)
  return steps, np.array([np.mean(per_step[s]) for s in sorted(per_step)], np.float64)


def _phase_spans(group: Sequence[Run]) -> list[tuple[str, float, float]]:
  """(phase, first step, last step) of each contiguous phase, in step order."""
  phase_at = {}
  for run in group:
    for p in run.get("curve") or []:
      phase_at.setdefault(p["step"], str(p["phase"]))
  spans: list[list] = []
  for step in sorted(phase_at):
    if spans and spans[-1][0] == phase_at[step]:
      spans[-1][2] = step
    else:
      spans.append([phase_at[step], step, step])
  return [tuple(s) for s in spans]


def plot_curves(runs: Sequence[Run], path: str) -> str:
  """Acc@t1 (solid) and Acc@t2 (dashed) over training, one subplot per non-base method."""
  _check_runs(runs)
  plt = figures.pyplot()
  groups = {m: g for m, g in _by_method(runs).items() if m != "base"}
  base = _by_method(runs).get("base", [])
  n = max(1, len(groups))
  fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 4), squeeze=False, sharey=True)
  if not groups:
    axes[0, 0].text(0.5, 0.5, "no trained methods", ha="center", va="center")
  refs = {k: 100 * np.mean([r["metrics"][k] for r in base]) for k in ("acc@t1", "acc@t2") if base}
  # A base whose attempts score the same gets one reference line, not two drawn on top.
  same_ref = bool(base) and round(refs["acc@t1"], 1) == round(refs["acc@t2"], 1)
  for ax, (method, group) in zip(axes[0], groups.items()):
    if same_ref:
      ax.axhline(refs["acc@t1"], ls=":", c="0.4", lw=1.2,
                 label=f"base acc@t1 = acc@t2 ({refs['acc@t1']:.1f})")  # fmt: skip
    for key, style, color in (("acc@t1", "-", "C0"), ("acc@t2", "--", "C1")):
      for run in group:  # thin per-seed lines behind the mean
        pts = sorted(run.get("curve") or [], key=lambda p: p["step"])
        ax.plot([p["step"] for p in pts], [100 * p[key] for p in pts], style, c=color, lw=0.6,
                alpha=0.3)  # fmt: skip
      steps, mean = _mean_curve(group, key)
      ax.plot(steps, mean, style, c=color, lw=2, marker=".", label=f"{key} (mean)")
      if base and not same_ref:
        ax.axhline(refs[key], ls=":", c=color, lw=1.2, label=f"base {key} ({refs[key]:.1f})")
    spans = _phase_spans(group)
    # A curve point at step s is the model after s updates, so a phase ends at its last point and
    # the next one's updates start right after it.
    cuts = [span[2] for span in spans[:-1]]
    for k, (phase, lo, hi) in enumerate(spans):
      left, right = (cuts[k - 1] if k else lo), (cuts[k] if k < len(cuts) else hi)
      if k % 2:
        ax.axvspan(left, right, color="0.92", zorder=0)
      if k:
        ax.axvline(left, c="0.4", lw=1)
      ax.text((left + right) / 2, 0.98, phase, transform=ax.get_xaxis_transform(), ha="center",
              va="top", fontsize=8, color="0.3")  # fmt: skip
    if not spans:
      ax.text(0.5, 0.5, "no training curve", transform=ax.transAxes, ha="center", va="center")
    ax.set(title=display_name(method), xlabel="step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
  axes[0, 0].set_ylabel("accuracy (%)")
  return figures.save_png(fig, path)


def plot_flips(rows: Sequence[Row], path: str) -> str:
  """Grouped bars per method: Δ i→c and Δ c→i in % with std error bars and value labels."""
  plt = figures.pyplot()
  fig, ax = plt.subplots(figsize=(max(4.0, 2.2 * len(rows)), 3.8))
  x = np.arange(len(rows))
  width = 0.38
  for k, (field, label, color) in enumerate(
    (("delta_i2c", "Δ i→c (fixed)", "C2"), ("delta_c2i", "Δ c→i (broken)", "C3"))
  ):
    mean = np.array([r[f"{field}_mean"] for r in rows])
    std = np.array([r[f"{field}_std"] for r in rows])
    pos = x + (k - 0.5) * width
    ax.bar(pos, mean, width, yerr=std, capsize=3, color=color, label=label)
    for px, m, s in zip(pos, mean, std):
      ax.text(px, m + s, f"{m:.1f}", ha="center", va="bottom", fontsize=8)
  ax.set_xticks(x, [r["name"] for r in rows], fontsize=8)
  ax.set_ylabel("% of problems")
  ax.set_title("Problems flipped between attempt 1 and attempt 2")
  ax.margins(y=0.15)
  ax.legend(fontsize=8)
  ax.grid(axis="y", alpha=0.3)
  return figures.save_png(fig, path)


def plot_edit_ratios(runs: Sequence[Run], path: str) -> str:
  """Histogram of attempt-1 vs attempt-2 edit-distance ratios per method (seeds pooled).

  Runs that carry `answer_changed` (per problem, aligned with `edit_ratios`) get stacked bars:
  an edit that keeps the answer (a restated or rewritten solution) apart from one that changes
  it, since the ratio alone cannot tell a redo of a one-pass answer from a restated redo.
  """
  _check_runs(runs)
  for i, run in enumerate(runs):
    ratios = run.get("edit_ratios")
    if not isinstance(ratios, list) or not ratios:
      raise ValueError(f"runs[{i}]['edit_ratios']: expected a non-empty list, got {ratios!r}")
    bad = [r for r in ratios if not _finite(r) or not 0.0 <= r <= 1.0]
    if bad:
      raise ValueError(f"runs[{i}]['edit_ratios']: values outside [0, 1]: {bad[:3]!r}")
    changed = run.get("answer_changed")
    if changed is not None and len(changed) != len(ratios):
      raise ValueError(
        f"runs[{i}]['answer_changed']: {len(changed)} flags for {len(ratios)} edit ratios"
      )
  plt = figures.pyplot()
  groups = _by_method(runs)
  fig, axes = plt.subplots(1, len(groups), figsize=(4 * len(groups), 3.2), squeeze=False,
                           sharey=True)  # fmt: skip
  bins = np.linspace(0.0, 1.0, 21)
  for ax, (method, group) in zip(axes[0], groups.items()):
    ratios = np.concatenate([np.asarray(r["edit_ratios"], np.float64) for r in group])
    # Weights make bar heights the fraction of problems, comparable across methods and seeds.
    weight = 1.0 / ratios.size
    title = f"{display_name(method)}\nmean {ratios.mean():.3f}"
    if all(r.get("answer_changed") is not None for r in group):
      changed = np.concatenate([np.asarray(r["answer_changed"], bool) for r in group])
      parts = [ratios[~changed], ratios[changed]]
      ax.hist(parts, bins=bins, weights=[np.full(p.shape, weight) for p in parts], stacked=True,
              color=["C0", "C3"], label=["same answer", "answer changed"])  # fmt: skip
      ax.legend(fontsize=7, loc="upper right")
      title += f", answer changed {100 * changed.mean():.1f}%"
    else:
      ax.hist(ratios, bins=bins, weights=np.full(ratios.shape, weight), color="C0")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("edit distance ratio (attempt 1 vs 2)")
    ax.set_xlim(0.0, 1.0)
    ax.grid(alpha=0.3)
  axes[0, 0].set_ylabel("fraction of problems")
  return figures.save_png(fig, path)


def _write_text(path: str, text: str) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(tmp, path)


def write_report(runs: Sequence[Run], out_dir: str) -> dict[str, str]:
  """Writes results.md, results.json and the three PNGs to `out_dir`; returns name -> path."""
  rows = summarize(runs)
  os.makedirs(out_dir, exist_ok=True)
  paths = {name: os.path.join(out_dir, f) for name, f in FILES.items()}
  plot_curves(runs, paths["curves"])
  plot_flips(rows, paths["flips"])
  plot_edit_ratios(runs, paths["edit_ratios"])
  md = ["# Testbed results: self-correction over two attempts", "",
        "Greedy evaluation on held-out problems; mean ± std over seeds, in percentage points.",
        "", markdown_table(rows)]  # fmt: skip
  for row in rows:
    seeds = ", ".join(str(s) for s in row["seeds"])
    n = row["num_seeds"]
    md.append(f"- {row['name']}: {n} seed{'s' if n != 1 else ''} ({seeds})")
  md.append("")
  found = findings(rows)
  if found:
    md += ["## The paper's findings at this scale (seed means)", "", findings_text(found)]
  for name, title in (("curves", "Accuracy over training"), ("flips", "Flips"),
                      ("edit_ratios", "Edit distance between attempts")):  # fmt: skip
    md += [f"![{title}]({FILES[name]})", ""]
  _write_text(paths["markdown"], "\n".join(md))
  _write_text(
    paths["json"],
    json.dumps({"rows": rows, "findings": found, "runs": list(runs)}, indent=2) + "\n",
  )
  return paths
