"""The report's markdown: the paper's tables with ours beside the paper's numbers, and the rest.

Every number is in points (%) unless its header says otherwise. A cell of the paper's columns
reads `ours [95% low, high] (paper X)`; how each row's interval was computed is listed under
its table.
"""

from collections.abc import Sequence
from typing import Any

from score_jax.report import stats

HEADERS = {
  "mbpp_r": "MBPP-R",
  "acc@t1": "Acc@t1",
  "acc@t2": "Acc@t2",
  "delta(t1,t2)": "Δ(t1,t2)",
  "delta_i->c(t1,t2)": "Δi→c(t1,t2)",
  "delta_c->i(t1,t2)": "Δc→i(t1,t2)",
}
SIGNED = {"delta(t1,t2)"}  # columns printed with an explicit sign, as the paper prints them


def num(x: float | None, signed: bool = False) -> str:
  if x is None:
    return "-"
  s = f"{x:+.1f}" if signed else f"{x:.1f}"
  return s[1:] if s in ("+0.0", "-0.0") else s  # no sign on a value that rounds to zero


def cell(c: stats.Cell | None, signed: bool = False) -> str:
  """`64.4 [61.2, 67.5] (paper 64.4)`; parts that are unknown are left out.

  A seed spread standing in for an interval reads `[61.2..67.5 over seeds]`, so it is never
  mistaken for a confidence interval.
  """
  if c is None:
    return "-"
  text = num(c.value, signed)
  if c.low is not None and c.high is not None:
    if c.kind == "seeds":
      text += f" [{num(c.low)}..{num(c.high)} over seeds]"
    else:
      text += f" [{num(c.low)}, {num(c.high)}]"
  if c.paper is not None:
    text += f" (paper {num(c.paper, signed)})"
  return text


def spread(entry: dict[str, Any] | None, signed: bool = False, digits: int = 1) -> str:
  """A seed mean with its min..max when there are several seeds."""
  if not entry:
    return "-"
  fmt = (lambda x: num(x, signed)) if digits == 1 else (lambda x: f"{x:.{digits}f}")
  text = fmt(entry["mean"])
  if len(entry["per_seed"]) > 1:
    text += f" ({fmt(entry['min'])}..{fmt(entry['max'])})"
  return text


def grid(header: Sequence[str], body: Sequence[Sequence[str]], left: int = 1) -> str:
  """A GitHub markdown table: the first `left` columns left-aligned, the rest right-aligned."""
  lines = [
    "| " + " | ".join(header) + " |",
    "|" + "|".join(["---"] * left + ["---:"] * (len(header) - left)) + "|",
  ]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
  return "\n".join(lines) + "\n"


def main_table(columns: Sequence[str], groups: Sequence[stats.Group]) -> str:
  """The paper's columns per row, the seed count, and each row's interval basis below."""
  header = ["Method", *(HEADERS.get(c, c) for c in columns), "Seeds"]
  body = [
    [g.title, *(cell(g.cells.get(c), c in SIGNED) for c in columns), str(len(g.runs))]
    for g in groups
  ]
  text = grid(header, body) + "\nIntervals:\n"
  text += "".join(f"- {g.title}: {g.interval}\n" for g in groups)
  many = [g for g in groups if len(g.runs) > 1]
  if many:
    text += "\nSpread across seeds (min..max):\n\n"
    body = []
    for g in many:
      row = [g.title, ", ".join(map(str, g.seeds))]
      for c in columns:
        v = g.cells.get(c)
        signed = c in SIGNED
        row.append(f"{num(min(v.per_seed), signed)}..{num(max(v.per_seed), signed)}" if v else "-")
      body.append(row)
    text += grid(["Method", "Seeds", *(HEADERS.get(c, c) for c in columns)], body)
  return text


def comparison_table(comps: Sequence[stats.RowComparison], titles: dict[str, str]) -> str:
  """Each row vs the reference on Acc@t2: per seed (McNemar p) and averaged over seeds."""
  if not comps:
    return ""
  ref = titles[comps[0].reference]
  text = (
    f"Paired comparison with {ref} on Acc@t2, on the problems both evaluated (row − {ref}, 95%"
    " paired bootstrap interval; exact McNemar test per seed):\n\n"
  )
  header = [
    "Method",
    "Seed",
    "Problems",
    f"Δ Acc@t2 vs {ref}",
    f"only {ref} right",
    "only row right",
    "McNemar p",
  ]
  body, notes = [], []
  for comp in comps:
    name = titles[comp.row]
    for s in comp.per_seed:
      d = s.difference
      body.append([name, str(s.seed), str(s.num_problems), _diff(d), str(s.only_reference_right),
                   str(s.only_row_right), f"{s.p_value:.3g}"])  # fmt: skip
    if comp.averaged is not None and not comp.single_pair:
      body.append(
        [name, "mean over seeds", str(comp.num_problems), _diff(comp.averaged), "-", "-", "-"]
      )
    if comp.note:
      notes.append(f"- {name}: {comp.note}\n")
  return text + grid(header, body) + ("\n" + "".join(notes) if notes else "")


def _diff(d: dict[str, float]) -> str:
  return f"{num(d['value'], True)} [{num(d['low'])}, {num(d['high'])}]"


def diagnostics_table(groups: Sequence[stats.Group]) -> str:
  have = [g for g in groups if g.extras.get("diagnostics")]
  if not have:
    return ""
  header = ["Method", "Answer change (%)", "Edit distance ratio", "Own correction rate (%)"]
  body = []
  for g in have:
    d = g.extras["diagnostics"]
    body.append(
      [
        g.title,
        spread(d.get("answer_change_rate")),
        spread(d.get("edit_distance_ratio"), digits=3),
        spread(d.get("own_correction_rate")),
      ]
    )
  return "Collapse diagnostics (seed mean, min..max over seeds):\n\n" + grid(header, body)


def per_level_table(groups: Sequence[stats.Group]) -> str:
  have = [g for g in groups if g.extras.get("per_level")]
  if not have:
    return ""
  header = ["Method", "Level", "Acc@t1", "Acc@t2", "Δi→c", "Δc→i", "Problems", "Seeds"]
  body = []
  for g in have:
    for level, m in g.extras["per_level"].items():
      body.append(
        [
          g.title,
          level,
          num(m["acc@t1"]),
          num(m["acc@t2"]),
          num(m["delta_i->c(t1,t2)"]),
          num(m["delta_c->i(t1,t2)"]),
          f"{m['num_examples']:.0f}",
          str(m["seeds"]),
        ]
      )
  return "Per difficulty level (Figure 7; seed means):\n\n" + grid(header, body, left=2)


def fixed_first_table(groups: Sequence[stats.Group]) -> str:
  have = [g for g in groups if g.extras.get("fixed_first")]
  if not have:
    return ""
  header = ["Method", "Correction rate, own attempts", "Correction rate, base's fixed attempts",
            "Acc@t1 fixed", "Acc@t2 fixed", "Problems"]  # fmt: skip
  body = []
  for g in have:
    f = g.extras["fixed_first"]
    body.append(
      [
        g.title,
        spread(f.get("own_correction_rate")),
        spread(f["fixed_correction_rate"]),
        spread(f.get("fixed_acc@t1")),
        spread(f.get("fixed_acc@t2")),
        f"{f['num_examples']:.0f}",
      ]
    )
  return "Correcting own vs the base model's fixed first attempts (Figure 4):\n\n" + grid(
    header, body
  )


def code_table(groups: Sequence[stats.Group]) -> str:
  have = [g for g in groups if g.extras.get("pass_at_k") or g.extras.get("repair")]
  if not have:
    return ""
  ks = sorted(
    {k for g in have for t in ("t1", "t2") for k in (g.extras.get("pass_at_k") or {}).get(t, {})},
    key=int,
  )
  header = ["Method", "MBPP-R", *(f"pass@{k} t{t}" for t in (1, 2) for k in ks)]
  body = []
  for g in have:
    r, p = g.extras.get("repair"), g.extras.get("pass_at_k") or {}
    rep = spread(r)
    if r and r.get("ci95"):
      rep += f" [{num(r['ci95'][0])}, {num(r['ci95'][1])}]"
    body.append([g.title, rep, *(spread(p.get(t, {}).get(k)) for t in ("t1", "t2") for k in ks)])
  return "Code: repair accuracy and pass@k (seed mean, min..max over seeds):\n\n" + grid(
    header, body
  )


def attempts_table(groups: Sequence[stats.Group]) -> str:
  have = [g for g in groups if g.extras.get("attempts")]
  if not have:
    return ""
  k = max(len(g.extras["attempts"]["k"]) for g in have)
  body = []
  for g in have:
    mean = g.extras["attempts"]["mean"]
    body.append([g.title, *(num(mean[j]) if j < len(mean) else "-" for j in range(k))])
  return "Accuracy at each attempt (Figure 8; seed means):\n\n" + grid(
    ["Method", *(f"Acc@t{j + 1}" for j in range(k))], body
  )


def scaling_table(groups: Sequence[stats.Group]) -> str:
  have = [g for g in groups if g.extras.get("scaling")]
  if not have:
    return ""
  body = []
  for g in have:
    s = g.extras["scaling"]
    for j, b in enumerate(s["budgets"]):
      body.append([g.title, str(b), num(s["parallel"][j]), num(s["sequential"][j])])
  return "Parallel vs sequential sampling (Figure 1, right; seed means):\n\n" + grid(
    ["Method", "Budget", "Parallel", "Sequential"], body
  )


EXTRA_TABLES = (
  diagnostics_table,
  per_level_table,
  fixed_first_table,
  code_table,
  attempts_table,
  scaling_table,
)
