"""Workdirs -> results.md, results.json and the figures: grouping rows, ordering tables, writing.

Finished runs are grouped by (table, row); a second run of the same (table, row, seed) is left
out and named (two evaluations of one seed would be counted as two seeds). Tables come in the
paper's order (`paper.TABLES`), then any other table a config names; rows in the paper's order
of that table, then rows the paper does not print there. The paper's rows of a table that no
workdir ran are listed as not run.
"""

import dataclasses
import json
import math
import os
from typing import Any

import numpy as np

from score_jax.configs import paper
from score_jax.report import extras, figures, stats, tables, workdirs

RESULTS_MD, RESULTS_JSON = workdirs.REPORT_FILES
OTHER_TITLE = "Runs outside the paper's tables"


@dataclasses.dataclass
class Section:
  """One table of the report: its rows, their comparisons and the paper's rows not run."""

  table: str
  title: str
  columns: tuple[str, ...]
  groups: list[stats.Group]
  comparisons: list[stats.RowComparison]
  not_run: list[paper.Row]


@dataclasses.dataclass
class Report:
  sections: list[Section]
  runs: list[workdirs.Run]
  missing: list[workdirs.Missing]
  figures: dict[str, dict[str, Any]]
  markdown_path: str
  json_path: str


CODE_TASKS = ("mbpp", "humaneval")
CODE_TABLES = ("table3",)


def tables_of(run: workdirs.Run) -> list[str]:
  """The tables a run is a row of: the one its config names, and, when that is a paper table,
  every other paper table that prints its row on the same kind of task (a MATH SCoRe run is a
  row of Tables 2 and 4)."""
  out = [run.table]
  if run.row in paper.ROWS and run.table in paper.TABLES:  # a table of its own: that one only
    code = any(run.task.startswith(t) for t in CODE_TASKS)
    for table in paper.ROWS[run.row].paper:
      if table not in out and (table in CODE_TABLES) == code:
        out.append(table)
  return out


def group_runs(runs: list[workdirs.Run]):
  """{(table, row): runs in seed order}, and the duplicate seeds left out (as Missing)."""
  groups: dict[tuple[str, str], list[workdirs.Run]] = {}
  duplicates = []
  for run in runs:
    for i, table in enumerate(tables_of(run)):
      members = groups.setdefault((table, run.row), [])
      first = next((r for r in members if r.seed == run.seed), None)
      if first is None:
        members.append(run)
      elif i == 0:
        reason = f"duplicate of {first.path} (table {table!r}, row {run.row!r}, seed {run.seed})"
        duplicates.append(workdirs.Missing(run.path, reason + "; left out"))
  return {k: sorted(v, key=lambda r: r.seed) for k, v in groups.items()}, duplicates


def _ordered(keys: list[tuple[str, str]]) -> list[tuple[str, list[str]]]:
  present = {t for t, _ in keys}
  order = [t for t in paper.TABLES if t in present] + sorted(present - set(paper.TABLES))
  out = []
  for table in order:
    rows = [r for t, r in keys if t == table]
    known = [r.name for r in paper.rows_of(table)] if table in paper.TABLES else []
    out.append((table, [r for r in known if r in rows] + [r for r in rows if r not in known]))
  return out


def _extras(runs: list[workdirs.Run]) -> dict[str, Any]:
  """Each extra section of a row; one whose files hold something unexpected is left out and
  noted on the row's first run (a malformed optional file must not cost the whole report)."""
  fns = (extras.diagnostics, extras.per_level, extras.fixed_first, extras.pass_at_k,
         extras.repair, extras.attempts, extras.scaling, extras.curves)  # fmt: skip
  out = {}
  for fn in fns:
    try:
      out[fn.__name__] = fn(runs)
    except (KeyError, TypeError, ValueError, IndexError) as e:
      out[fn.__name__] = None
      runs[0].notes.append(f"{fn.__name__} left out: {type(e).__name__}: {e}")
  return out


def sections(runs: list[workdirs.Run], num_resamples: int) -> list[Section]:
  """The report's tables from the (deduplicated) finished runs."""
  grouped, _ = group_runs(runs)
  out = []
  for table, rows in _ordered(list(grouped)):
    groups = []
    for row in rows:
      g = stats.summarize(table, row, grouped[table, row], num_resamples)
      g.extras = _extras(g.runs)
      groups.append(g)
    title = paper.TABLES[table][0] if table in paper.TABLES else f"{OTHER_TITLE}: {table or '-'}"
    known = paper.rows_of(table) if table in paper.TABLES else []
    not_run = [r for r in known if r.name not in rows]
    comps = stats.comparisons(groups, num_resamples)
    out.append(Section(table, title, stats.columns_of(table), groups, comps, not_run))
  return out


def _budget(runs: list[workdirs.Run]) -> str:
  kinds = sorted({(r.updates, r.global_batch) for r in runs})
  return "; ".join(
    f"{u} x {b} = {u * b:,} episodes" if u else "none (trains nothing)" for u, b in kinds
  )


def _section_md(sec: Section) -> list[str]:
  parts = [f"## {sec.title}\n\n" + tables.main_table(sec.columns, sec.groups)]
  if sec.not_run:
    parts.append("Not run: " + ", ".join(f"{r.title} (`{r.name}`)" for r in sec.not_run) + "\n")
  titles = {g.row: g.title for g in sec.groups}
  texts = [tables.comparison_table(sec.comparisons, titles)]
  texts += [fn(sec.groups) for fn in tables.EXTRA_TABLES]
  return parts + [t for t in texts if t]


def _runs_md(report: Report) -> str:
  header = ["Table", "Row", "Method", "Task", "Budget (updates x global batch)", "Seeds"]
  header.append("Workdirs")
  body = []
  for sec in report.sections:
    for g in sec.groups:
      tasks = ", ".join(sorted({r.task for r in g.runs}))
      seeds, paths = ", ".join(map(str, g.seeds)), "<br>".join(r.path for r in g.runs)
      body.append([sec.table or "-", g.row, g.method, tasks, _budget(g.runs), seeds, paths])
  return "## Runs\n\n" + tables.grid(header, body, left=len(header))


def _figures_md(figs: dict[str, dict[str, Any]]) -> str:
  lines = ["## Figures\n"]
  for file, info in figs.items():
    lines.append(
      f"![{file}]({file})\n" if info["written"] else f"- `{file}` not written: {info['why']}\n"
    )
  return "\n".join(lines)


def markdown(report: Report) -> str:
  """results.md: what is missing first, then the tables, the runs behind them and the figures."""
  n = len(report.runs)
  parts = [f"# Results\n\n{n} finished workdir(s); {len(report.missing)} missing / unfinished.\n"]
  gone = "".join(f"- `{m.path}`: {m.reason}\n" for m in report.missing) or "None.\n"
  parts.append("## Missing / unfinished workdirs\n\n" + gone)
  for sec in report.sections:
    parts += _section_md(sec)
  parts += [_runs_md(report), _figures_md(report.figures)]
  notes = "".join(f"- `{r.path}`: {note}\n" for r in report.runs for note in r.notes)
  if notes:
    parts.append("## Notes\n\n" + notes)
  return "\n".join(parts)


def _run_json(run: workdirs.Run) -> dict[str, Any]:
  out = {k: getattr(run, k) for k in ("path", "table", "row", "method", "seed", "task", "updates")}
  out |= {"global_batch": run.global_batch, "metrics": run.metrics, "per_level": run.per_level}
  out |= {"values": stats.seed_values(run), "num_problems": len(run.ids), "notes": run.notes}
  out["evals"], out["curve"] = run.evals, {k: [list(p) for p in v] for k, v in run.curve.items()}
  return out


def _group_json(g: stats.Group) -> dict[str, Any]:
  out = {k: getattr(g, k) for k in ("row", "title", "method", "interval", "num_problems")}
  out |= {"seeds": g.seeds, "workdirs": [r.path for r in g.runs], "extras": g.extras}
  out["columns"] = {c: dataclasses.asdict(v) for c, v in g.cells.items()}
  return out


def to_json(report: Report) -> dict[str, Any]:
  """results.json: every number of the report, per workdir and per row."""
  return {
    "units": "tables, comparisons and extras in points (%); workdirs[].metrics, evals and curves"
    " as the runs wrote them (fractions); edit distance ratios are ratios",
    "tables": [
      {
        "table": s.table,
        "title": s.title,
        "columns": list(s.columns),
        "rows": [_group_json(g) for g in s.groups],
        "comparisons": [dataclasses.asdict(c) for c in s.comparisons],
        "not_run": [r.name for r in s.not_run],
      }  # fmt: skip
      for s in report.sections
    ],
    "workdirs": [_run_json(r) for r in report.runs],
    "missing": [dataclasses.asdict(m) for m in report.missing],
    "figures": report.figures,
  }


def _clean(x: Any) -> Any:
  """JSON-safe: numpy scalars as Python numbers, non-finite floats as null."""
  if isinstance(x, dict):
    return {str(k): _clean(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_clean(v) for v in x]
  if isinstance(x, np.generic):
    x = x.item()
  return None if isinstance(x, float) and not math.isfinite(x) else x


def _write(path: str, text: str) -> None:
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(path + ".tmp", path)


def collect(paths: list[str], out: str) -> tuple[list[workdirs.Run], list[workdirs.Missing]]:
  """The finished runs under `paths` (duplicate seeds moved to the missing list) and the rest."""
  runs, missing = workdirs.load_all(paths, exclude=(out,))
  _, duplicates = group_runs(runs)
  dropped = {m.path for m in duplicates}
  return [r for r in runs if r.path not in dropped], missing + duplicates


def _distinct(groups: list) -> list:
  """Each set of runs once: a run that is a row of several tables is one line in a figure."""
  seen, out = set(), []
  for g in groups:
    key = tuple(r.path for r in g.runs)
    if key not in seen:
      seen.add(key)
      out.append(g)
  return out


def write(
  runs: list[workdirs.Run], missing: list[workdirs.Missing], out: str, num_resamples: int = 10_000
) -> Report:
  """results.md, results.json and the figures of `runs` into `out`."""
  os.makedirs(out, exist_ok=True)
  secs = sections(runs, num_resamples)
  figs = figures.write_figures(_distinct([g for s in secs for g in s.groups]), out)
  report = Report(secs, runs, missing, figs, os.path.join(out, RESULTS_MD),
                  os.path.join(out, RESULTS_JSON))  # fmt: skip
  _write(report.markdown_path, markdown(report))
  _write(report.json_path, json.dumps(_clean(to_json(report)), indent=1, allow_nan=False) + "\n")
  return report


def write_report(paths: list[str], out: str, num_resamples: int = 10_000) -> Report:
  """Reads every workdir under `paths`, writes results.md / results.json / figures into `out`."""
  runs, missing = collect(paths, out)
  return write(runs, missing, out, num_resamples)
