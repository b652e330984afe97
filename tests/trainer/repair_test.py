"""The repair set (MBPP-R stand-in): built from the base model's failing first attempts on MBPP's
test split, evaluated by the suite's `repair`; bad files fail naming the file and line."""

import json
import os
import types

import pytest

from score_jax import configs
from score_jax.data import chat, records
from score_jax.data import tokenizer as tokenizer_lib
from score_jax.rewards import pool as pool_lib
from score_jax.trainer import repair, suite
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config():
  c = helpers.experiment_config("score_code")
  c.data.eval_task, c.data.eval_split = "mbpp", "test"
  c.rollout.max_new_tokens, c.rollout.gen_buckets = 8, (8,)
  # Repair prompts hold the 3-shot prompt, the fixed attempt and the instruction.
  c.rollout.prompt_buckets = (1024, 1280)
  c.eval.num_examples, c.eval.batch_size = 4, 8
  c.rl.method = "base"  # no checkpoint: the suite evaluates the base model
  return c


def test_build_then_repair(tmp_path):
  c, workdir = _config(), str(tmp_path)
  out = os.path.join(workdir, "sets", "repair_set.jsonl")
  with pool_lib.RewardPool(2) as pool:
    meta = repair.build_repair_set(c, out, workdir=workdir, pool=pool)
    rows = [json.loads(line) for line in open(out)]
    # A random model passes no MBPP tests: every first attempt is kept.
    assert meta["count"] == len(rows) == meta["num_problems"] == 4
    assert all(set(r) == {"id", "program"} and r["id"].startswith("mbpp/") for r in rows)
    sidecar = json.load(open(repair.meta_path(out)))
    assert sidecar == meta and (sidecar["task"], sidecar["split"]) == ("mbpp", "test")
    assert {"model_checkpoint", "model_preset", "date", "max_new_tokens", "tokenizer"} <= set(meta)
    c.eval.suite, c.eval.repair_set = ("repair",), out
    configs.validate(c, num_devices=8)
    result = suite.run_suite(c, workdir, pool)["repair"]
  saved = json.load(open(suite.path_of(workdir, "repair")))
  assert set(saved) == {"step", "repair_accuracy", "ci95", "num_examples", "repair_set", "episodes"}
  assert saved["step"] == 0 and saved["repair_set"] == out and saved["num_examples"] == 4
  lo, hi = saved["ci95"]
  assert (
    lo <= saved["repair_accuracy"] <= hi and result["repair_accuracy"] == saved["repair_accuracy"]
  )
  assert [e["id"] for e in saved["episodes"]] == [r["id"] for r in rows]


def _write(tmp_path, lines):
  path = tmp_path / "set.jsonl"
  path.write_text("".join(line + "\n" for line in lines))
  return str(path)


def test_bad_repair_sets_name_the_file_and_line(tmp_path):
  with pytest.raises(configs.ConfigError, match=r"config\.eval\.repair_set is empty"):
    repair.load_repair_set("")
  with pytest.raises(FileNotFoundError, match=r"nope\.jsonl: repair set not found"):
    repair.load_repair_set(str(tmp_path / "nope.jsonl"))
  good = json.dumps({"id": "mbpp/11", "program": "def f(): pass"})
  cases = [
    ([good, "{not json"], r"set\.jsonl:2: not JSON"),
    ([good, "", json.dumps({"id": "mbpp/12"})], r"set\.jsonl:3: expected an object"),
    ([json.dumps({"id": "mbpp/12", "program": 3})], r"set\.jsonl:1: expected an object"),
    (["[1, 2]"], r"set\.jsonl:1: expected an object with strings 'id' and 'program'"),
    ([good, good], r"set\.jsonl:2: id 'mbpp/11' appears twice"),
    ([], r"set\.jsonl: no rows"),
  ]
  for lines, match in cases:
    with pytest.raises(records.DataFormatError, match=match):
      repair.load_repair_set(_write(tmp_path, lines))
  rows, meta = repair.load_repair_set(_write(tmp_path, [good]))
  assert rows == [(1, "mbpp/11", "def f(): pass")] and meta == {}


def test_a_row_that_is_not_a_problem_names_its_line(tmp_path):
  path = _write(tmp_path, [json.dumps({"id": "mbpp/11", "program": "x"}),
                           json.dumps({"id": "mbpp/999999", "program": "x"})])  # fmt: skip
  rows, _ = repair.load_repair_set(path)
  ctx = types.SimpleNamespace(config=_config())
  with pytest.raises(
    records.DataFormatError,
    match=r"set\.jsonl:2: id 'mbpp/999999' is not a problem of task 'mbpp' split 'test'",
  ):
    repair._problems(ctx, rows, {}, path)


def test_the_fixed_attempt_is_a_closed_model_turn(tmp_path):
  texts = ["def add(a, b):\n    return a - b", "Fix it.", "Write add."] * 20
  tokenizer_lib.train_sentencepiece(texts, str(tmp_path / "spm"), 300)
  tok = tokenizer_lib.load_tokenizer(str(tmp_path / "spm.model"))
  template = chat.get_template("gemma")
  instruction = template.next_turn_ids(tok, "Fix it.")
  program = "  def add(a, b):\n    return a - b\n"
  ids = repair.repair_prompt(tok, template, "Write add.", program, instruction)
  convo = [
    {"role": "user", "content": "Write add."},
    {"role": "model", "content": program},
    {"role": "user", "content": "Fix it."},
  ]
  # The same text as the chat template's rendering of the three turns (BOS first).
  assert tok.decode(ids[1:]) == tok.decode(tok.encode(template.render(convo)))
  assert ids[0] == tok.bos_id
