"""`python -m score_jax.report WORKDIR... --out=DIR`: finished runs -> the paper's tables.

Reads what a finished workdir holds (config.json, metrics.jsonl, eval/final.json and the
optional eval/attempts.json, scaling.json, fixed_first.json, pass_at_k.json, repair.json),
groups runs by (paper table, row) over seeds and writes, into DIR:
- results.md: per table (the paper's columns, `score_jax.configs.paper`) our seed mean with a
  95% interval (bootstrap over problems of the seed-averaged per-problem correctness) beside
  the paper's number, the seed spread, the paper's rows not run, each row vs SCoRe on the same
  problems (paired bootstrap + McNemar), collapse diagnostics, per-level, Figure 4, code,
  attempts and scaling tables, the runs (method, budget, seeds), figures and what is missing;
- results.json: every number, per workdir and per row;
- scaling.png, attempts.png, edit_distance.png, training_curves.png, rl_curves.png when their
  data exist.

Public face (import the modules):
- `build.write_report(paths, out, num_resamples)` -> `build.Report` (the whole pipeline;
  `build.collect` + `build.write` are its two halves);
- `workdirs.load_all(paths)` -> (`workdirs.Run`s, `workdirs.Missing`s): reading;
- `stats.summarize` / `stats.compare` / `stats.bootstrap_means`: rows over seeds, comparisons;
- `extras.*`: the sections beyond the paper's columns; `tables.*`: markdown; `figures.*`: PNGs;
- `seeds.write_report(runs, out)`: the lighter report over seeds of in-memory run dicts (one
  table, the paper's qualitative findings, three plots) that the testbed and compare jobs print.
"""
