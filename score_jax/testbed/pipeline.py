"""The testbed job: tokenizer -> pretraining -> base eval -> SCoRe and naive RL per seed -> report.

  python -m score_jax.main --config=experiments/testbed.py --workdir=/tmp/testbed

Every phase writes its result atomically under the workdir and is skipped when that result is
there, so a rerun after a crash or kill continues where it stopped (pretraining and each RL run
also resume mid-way from their Orbax checkpoints):

  tokenizer/spm.model            SentencePiece trained on testbed transcripts
  pretrain/                      pretraining checkpoints + history.json
  base/                          the base model as a HF checkpoint dir (+ tokenizer.model)
  eval/base.json                 greedy 2-attempt eval of the base model on the held-out problems
  runs/<method>_seed<s>/         one RL run (trainer.loop.run: metrics.jsonl, checkpoints, episodes)
  eval/<method>_seed<s>.json     its final greedy eval
  report/                        results.md / results.json, accuracy_curves.png, flips.png,
                                 edit_ratios.png
  timings.json                   wall seconds per phase (cached phases keep their first time)
"""

from __future__ import annotations

import json
import os
import time

import jax
import ml_collections
from absl import logging

from score_jax import configs
from score_jax.configs import paper
from score_jax.data import chat
from score_jax.data import tokenizer as tokenizer_lib
from score_jax.models import decoder, presets
from score_jax.parallel import mesh as mesh_lib
from score_jax.report import build as paper_report
from score_jax.report import seeds as report
from score_jax.rewards import factory
from score_jax.rl import algorithms
from score_jax.testbed import arith, corpus, pretrain
from score_jax.testbed import config as testbed_config  # noqa: F401  (registers the job)
from score_jax.testbed import task as testbed_task
from score_jax.trainer import console, method_runs, suite


def _say(msg: str) -> None:
  if jax.process_index() == 0:
    console.say(msg, tag="testbed")


def mixture(config) -> corpus.Mixture:
  return corpus.Mixture(**config.testbed.mixture.to_dict())


def instruction(config) -> str:
  """The testbed task's correction instruction (the one the RL episodes append)."""
  del config
  return testbed_task.SPEC.correction


def rl_config(config, method: str, seed: int, base_dir: str) -> ml_collections.ConfigDict:
  """The `score` job config of one RL run: the experiment's sections, the base checkpoint."""
  c = ml_collections.ConfigDict(config.to_dict())
  del c["testbed"]
  c.job = "score"
  c.seed = seed
  paper.apply_row(c, testbed_config.row_name(method))
  c.eval.suite = ()  # the final evaluation runs on eval_problems after training (_run_method)
  c.model.checkpoint = base_dir
  c.model.tokenizer = ""
  c.model.vocab_size = 0
  c.model.tokenizer_train_vocab = 0
  c.eval.num_examples = config.testbed.curve_problems
  configs.validate(c, num_devices=jax.device_count())
  return c


def _train_examples(config):
  family = testbed_task.FAMILY_OF[config.data.task]
  return arith.load_split("train", config.testbed.train_problems, family)


def _tokenizer(config, workdir: str, timings: method_runs.Timings) -> str:
  path = os.path.join(workdir, "tokenizer", "spm.model")
  if os.path.exists(path):
    _say(f"tokenizer: cached {path}")
    return path
  _say("tokenizer: training a SentencePiece on testbed transcripts")
  start = time.time()
  if jax.process_index() == 0:
    texts = corpus.tokenizer_texts(
      _train_examples(config)[: config.testbed.tokenizer_problems],
      chat.get_template("gemma"),
      instruction(config),
      config.seed,
      with_verify=bool(config.testbed.mixture.verify or config.testbed.mixture.first_verify),
    )
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = os.path.join(os.path.dirname(path), f"tmp{os.getpid()}")
    # Pieces may span spaces: the answer line and the instruction become a few tokens each,
    # which keeps CPU sequences short. Digits stay one per token (Gemma's convention).
    tokenizer_lib.train_sentencepiece(
      texts,
      tmp,
      presets.get_preset(config.model.preset).vocab_size,
      split_by_whitespace=False,
      max_sentencepiece_length=32,
    )
    os.replace(tmp + ".model", path)
    os.replace(tmp + ".vocab", path[: -len(".model")] + ".vocab")
  timings.add("tokenizer", time.time() - start)
  return path


def _pretrain(config, workdir: str, spm_path: str, mesh, timings: method_runs.Timings) -> str:
  base_dir = os.path.join(workdir, "base")
  if os.path.exists(os.path.join(base_dir, "config.json")):
    _say(f"pretraining: cached base model {base_dir}")
    return base_dir
  tb = config.testbed
  start = time.time()
  tok = tokenizer_lib.load_tokenizer(spm_path)
  template = chat.get_template("gemma")
  instr_ids = template.next_turn_ids(tok, instruction(config))
  model_cfg = presets.get_preset(config.model.preset)
  examples = _train_examples(config)
  streams = corpus.encode_streams(
    examples, tok, template, instr_ids, mixture(config), config.seed, tb.seq_len
  )
  used = int(streams["valid"].sum(1).max())
  streams = {k: v[:, : -(-used // 8) * 8] for k, v in streams.items()}  # trim the padding
  n_params = decoder.count_params(model_cfg)
  _say(
    f"pretraining {config.model.preset} ({n_params / 1e6:.2f}M params) on {len(examples)} "
    f"transcripts, {tb.pretrain_steps} steps"
  )
  # testbed.pretrain_<field> sets PretrainConfig.<field>.
  fields = ("steps", "batch", "lr", "save_every")
  pc = pretrain.PretrainConfig(**{f: tb[f"pretrain_{f}"] for f in fields}, seed=config.seed)
  params, history = pretrain.pretrain(
    model_cfg, streams, pc, mesh, os.path.join(workdir, "pretrain")
  )
  if jax.process_index() == 0:
    method_runs.write_json(os.path.join(workdir, "pretrain", "history.json"), history)
  pretrain.export_base(model_cfg, params, spm_path, base_dir)
  timings.add("pretrain", time.time() - start)
  if jax.process_index() == 0:
    nll = {"nll": round(history[-1]["nll"], 4)} if history else ""
    console.result("pretraining", nll, time.time() - start, tag="testbed")
  return base_dir


def _run_method(config, workdir, base_dir, method, seed, pool, timings) -> dict:
  """One row's run: train (nothing for base / Self-Refine), then the final greedy evaluation
  of its selected checkpoint on `testbed.eval_problems` held-out problems."""
  c = rl_config(config, method, seed, base_dir)
  name = f"{method}_seed{seed}"
  return method_runs.run_method(
    c, workdir, name, config.testbed.eval_problems, pool, timings, tag="testbed"
  )


def _figure_evals(config, workdir, base_dir, pool, timings) -> None:
  """The figures' evaluations (testbed.figure_evals: 10 attempts, scaling, the base model's
  fixed first attempts) of the first seed's runs of testbed.figure_methods, on
  testbed.curve_problems problems (fixed_first: eval_problems). Written once per run."""
  tb = config.testbed
  for method in tb.figure_methods:
    seed = config.seed if method == "base" else tb.rl_seeds[0]
    name = f"{method}_seed{seed}"
    c = rl_config(config, method, seed, base_dir)
    c.eval.suite = tuple(tb.figure_evals)
    c.eval.num_examples, c.eval.curve_problems = tb.eval_problems, tb.curve_problems
    paper.add_continued_prompt_bucket(c)  # fixed_first: prompts holding attempt 1
    start = time.time()
    suite.run_suite(c, os.path.join(workdir, "runs", name), pool)
    timings.add(f"figures/{name}", time.time() - start)


def run(config, workdir: str, pool=None) -> list[dict]:
  """Runs (or resumes) every phase; returns the report's summary rows."""
  with factory.reward_pool(config, pool) as pool:
    return _run(config, workdir, pool)


# Fields that only choose which RL runs exist: each run's phases are cached under its own name, so
# a rerun with more seeds (or methods) reuses everything already done and adds the rest.
RUN_SELECTION = ("rl_seeds", "methods", "figure_methods", "figure_evals")


def check_workdir_config(config, workdir: str) -> None:
  """A workdir belongs to one config; only `testbed.rl_seeds`, `methods` and the figure runs may
  change between invocations (method_runs.check_workdir_config)."""
  method_runs.check_workdir_config(config, workdir, "testbed", RUN_SELECTION)


def _run(config, workdir: str, pool) -> list[dict]:
  t0 = time.time()
  check_workdir_config(config, workdir)
  timings = method_runs.Timings(workdir)
  mesh = mesh_lib.make_mesh(configs.mesh_shape(config, jax.device_count()))
  spm_path = _tokenizer(config, workdir, timings)
  base_dir = _pretrain(config, workdir, spm_path, mesh, timings)
  run = lambda method, seed: _run_method(config, workdir, base_dir, method, seed, pool, timings)
  runs = [method_runs.run_record("base", config.seed, run("base", config.seed))]
  first_seed = config.testbed.rl_seeds[0]
  for seed in config.testbed.rl_seeds:
    for method in config.testbed.methods:
      untrained = not algorithms.method(
        paper.get_row(testbed_config.row_name(method)).method
      ).phases
      if untrained and seed != first_seed:
        continue  # greedy and untrained: every seed would give the same numbers
      runs.append(method_runs.run_record(method, seed, run(method, seed)))
  _figure_evals(config, workdir, base_dir, pool, timings)
  rows = report.summarize(runs)
  if jax.process_index() == 0:
    paths = report.write_report(runs, os.path.join(workdir, "report"))
    # The same runs as rows of the paper's tables (what `python -m score_jax.report` writes).
    rundirs = [os.path.join(workdir, "runs", f"{r['method']}_seed{r['seed']}") for r in runs]
    paper_report.write_report(rundirs, os.path.join(workdir, "report", "paper"))
    console.say("\n" + report.format_table_for_console(rows))
    console.say(report.findings_text(report.findings(rows)).rstrip("\n"))
    wall = json.dumps({k: round(v, 1) for k, v in timings.seconds.items()})
    console.say(f"\nwall seconds per phase: {wall}")
    console.say(f"this invocation: {time.time() - t0:.0f} s; log: {console.current_log()}")
    console.report(paths["markdown"])
  logging.info("testbed done: %s", rows)
  return rows
