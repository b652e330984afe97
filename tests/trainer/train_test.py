"""The SCoRe train loop end to end: stages, outputs, the non-finite guard, up-front config
errors."""

import dataclasses
import glob
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from score_jax import configs, tasks
from score_jax.generation import offline, rollout
from score_jax.models import presets
from score_jax.trainer import loop, metric_writers, schedule
from score_jax.trainer import setup as setup_lib
from tests import numerics
from tests.trainer.resume_test import final_params

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _experiment(name: str, arg: str = "tiny"):
  spec = importlib.util.spec_from_file_location(
    name, os.path.join(REPO, "experiments", f"{name}.py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _fast_config(**overrides):
  """score_math.py:tiny with one step per stage and 8-token attempts."""
  c = _experiment("score_math")
  c.stage1.steps = c.stage2.steps = 1
  c.rollout.max_new_tokens, c.rollout.gen_buckets = 8, (8,)
  c.checkpoint.every_steps = 1
  c.log.episodes_every_steps = 1
  for path, value in overrides.items():
    section, field = path.split(".")
    c[section][field] = value
  configs.validate(c, num_devices=8)
  return c


@pytest.fixture(scope="module", autouse=True)
def _compile_cache(tmp_path_factory):
  # The runs below differ only outside the jitted steps: the persistent cache compiles once.
  import jax

  jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla_cache")))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _records(workdir):
  return metric_writers.read_metrics(workdir)


def _k3_rounding_bound(config, workdir) -> float:
  """k3 = r^2 / 2 + O(r^3) for |r| <= two log-prob bounds (tests/numerics.py)."""
  model_cfg = presets.get_preset(config.model.preset, vocab_size=config.model.vocab_size)
  params = final_params(str(workdir), 2)  # two small steps from the start: the same scale
  # |logit| <= |final-normed x| max_v |e_v| <= sqrt(d) max |scale| max_v |e_v| (Cauchy-Schwarz).
  norm = np.abs(float(model_cfg.norm_plus_one) + params["final_norm"]["scale"]).max()
  emb = np.linalg.norm(params["embedder"]["input_embedding"], axis=-1).max()
  scale = float(np.sqrt(model_cfg.embed_dim) * norm * emb)
  logit_err = numerics.logit_bound(model_cfg, model_cfg.max_seq_len, scale)
  r = 2 * numerics.logprob_bound(logit_err, scale, model_cfg.vocab_size)
  return r * r / 2 * (1 + r) + 4 * numerics.U32 * r


def test_stage1_then_stage2_writes_everything(tmp_path):
  config = _fast_config()
  last = loop.run(config, str(tmp_path))
  recs = _records(tmp_path)
  assert [(r["step"], r["stage"]) for r in recs] == [(1, "stage1"), (2, "stage2")]
  s = recs[-1]["scalars"]
  for key in ("train/acc@t1", "train/acc@t2", "train/delta(t1,t2)", "train/delta_i->c(t1,t2)",
              "train/delta_c->i(t1,t2)", "step/kl_k1_turn1", "step/kl_k3_turn2",
              "step/entropy_turn1", "len/turn2_truncation_rate", "train/edit_distance_ratio",
              "train/answer_change_rate", "tokens_per_s", "time/sampling_s", "time/rewards_s",
              "time/update_s", "outcomes/timeout", "outcomes/error", "eval/acc@t2"):  # fmt: skip
    assert key in s, key
  assert s["step/finite"] == 1.0 and last["eval/num_examples"] == 8
  # The step's time split adds up to its wall time; throughput follows from it.
  parts = s["time/sampling_s"] + s["time/rewards_s"] + s["time/update_s"] + s["time/host_s"]
  assert s["time/host_s"] >= 0 and parts <= s["time/step_s"] + 1e-6
  assert s["episodes_per_s"] == pytest.approx(config.train.global_batch / s["time/step_s"])
  assert s["update_gflops_per_s"] > 0
  # The turn-1 KL of Stage I's first step is 0 up to rounding: the policy starts AT the
  # reference, so r = log pi - log ref is two float32 forwards' difference and k3 ~ r^2 / 2.
  assert abs(recs[0]["scalars"]["step/kl_k3_turn1"]) <= _k3_rounding_bound(config, tmp_path)
  assert glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))
  dumps = [json.loads(line) for line in open(tmp_path / "episodes.jsonl")]
  assert {d["step"] for d in dumps} == {1, 2} and len(dumps[0]["attempts"]) == 2
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]
  assert os.path.exists(tmp_path / "tokenizer" / "spm.model")
  # A rerun of a finished run resumes at the end: nothing is redone, nothing duplicated.
  loop.run(_fast_config(), str(tmp_path))
  assert [r["step"] for r in _records(tmp_path)] == [1, 2]


def test_nonfinite_stops_with_step_and_batch_saved(tmp_path):
  with pytest.raises(loop.NonFiniteError, match=r"non-finite loss/gradient at step 1 \(stage1\)"):
    loop.run(_fast_config(**{"train.debug_nan_step": 0}), str(tmp_path))
  saved = np.load(tmp_path / "nonfinite" / "step_1_process_0.npz")
  assert saved["tokens"].shape[0] == 8 and saved["rewards"].shape == (8, 2)
  info = json.loads((tmp_path / "nonfinite" / "step_1_process_0.json").read_text())
  assert info["step"] == 1 and info["metrics"]["finite"] == 0.0
  assert not os.path.exists(tmp_path / "checkpoints" / "1")


def test_nonfinite_skip_continues(tmp_path):
  cfg = _fast_config(**{"train.debug_nan_step": 0, "train.on_nonfinite": "skip"})
  loop.run(cfg, str(tmp_path))
  recs = _records(tmp_path)
  assert [r["step"] for r in recs] == [1, 2]
  assert recs[0]["scalars"]["step/finite"] == 0.0 and recs[1]["scalars"]["step/finite"] == 1.0
  assert recs[1]["scalars"]["nonfinite_skipped"] == 1.0


def _main(*flags, devices=8, timeout=600):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  cmd = [sys.executable, "-m", "score_jax.main", *flags]
  return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=timeout, env=env)


@pytest.mark.parametrize(
  "flag, match",
  [
    ("--config.train.global_batch=12", "config.train.global_batch = 12"),
    ("--config.rl.kl_estimator=k7", "config.rl.kl_estimator = 'k7'"),
  ],
)
def test_bad_config_fails_before_compilation(tmp_path, flag, match):
  # 12 episodes = 3 prompts x g=4 do not split over the 8 devices' data*fsdp shards.
  res = _main("--config=experiments/score_math.py:tiny", f"--workdir={tmp_path}", flag)
  assert res.returncode != 0 and match in res.stderr, res.stderr[-2000:]
  assert not (tmp_path / "checkpoints").exists()


def test_validate_names_the_field():
  c = _experiment("score_math")
  c.train.global_batch = 12
  with pytest.raises(
    configs.ConfigError, match=r"config\.train\.global_batch = 12: must be divisible by the mesh"
  ):
    configs.validate(c, num_devices=8)
  c = _experiment("score_code")
  c.train.num_microbatches = 3
  with pytest.raises(
    configs.ConfigError,
    match=r"config\.train\.global_batch = 8: not divisible by config\.train\.num_microbatches = 3",
  ):
    configs.validate(c)
  c = _experiment("score_math", "")
  c.schedule.kind = "random"
  with pytest.raises(configs.ConfigError, match=r"config\.schedule\.kind = 'random'"):
    configs.validate(c)


def test_non_tiny_preset_needs_a_checkpoint(tmp_path):
  c = _experiment("score_math", "")
  with pytest.raises(configs.ConfigError, match=r"config\.model\.checkpoint is empty"):
    loop.run(c, str(tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["score_math", "score_code"])
def test_cli_tiny_experiment(tmp_path, experiment):
  # One CPU device, as on a laptop: the acceptance is "under 5 minutes on CPU".
  start = time.monotonic()
  res = _main(f"--config=experiments/{experiment}.py:tiny", f"--workdir={tmp_path}", devices=1)
  print(f"{experiment}:tiny took {time.monotonic() - start:.0f} s")
  assert res.returncode == 0, res.stderr[-3000:]
  recs = _records(tmp_path)
  assert [r["stage"] for r in recs] == ["stage1"] * 3 + ["stage2"] * 3
  assert "eval/acc@t1" in recs[-1]["scalars"]
  assert glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))
  assert (tmp_path / "episodes.jsonl").stat().st_size > 0
  assert "6" in os.listdir(tmp_path / "checkpoints")


def test_single_turn_rl_is_a_config_value(tmp_path):
  """'w/o multi-turn training' (paper Table 4): config.rl.method = 'single_turn' trains on one
  attempt per episode with SCoRe's update budget, and is evaluated with two attempts."""
  config = _fast_config(**{"rl.method": "single_turn"})
  last = loop.run(config, str(tmp_path))
  recs = _records(tmp_path)
  assert [(r["step"], r["stage"]) for r in recs] == [(1, "single_turn"), (2, "single_turn")]
  s = recs[-1]["scalars"]
  assert "train/reward_turn1" in s and "train/reward_turn2" not in s
  assert "step/tokens_turn1" in s and "step/tokens_turn2" not in s
  assert s["step/finite"] == 1.0 and s["len/turn1_mean"] > 0
  dumps = [json.loads(line) for line in open(tmp_path / "episodes.jsonl")]
  assert all(len(d["attempts"]) == 1 for d in dumps)
  assert "eval/acc@t2" in last and last["eval/num_examples"] == 8


def test_stage_schedule():
  c = _experiment("score_math", "")
  c.stage1.steps, c.stage2.steps = 2, 3
  assert schedule.phases(c) == [("stage1", 2), ("stage2", 3)]
  c.schedule.kind, c.schedule.num_rounds = "interleaved", 2
  assert [schedule.phase_at(c, s) for s in (0, 1, 2, 4, 5, 9)] == [
    ("stage1", 0), ("stage1", 1), ("stage2", 0), ("stage2", 2), ("stage1", 0), ("stage2", 2)
  ]  # fmt: skip
  assert schedule.total_steps(c) == 10
  with pytest.raises(ValueError, match="past the schedule"):
    schedule.phase_at(c, 10)
  # The one-phase baselines: SCoRe's whole update budget in one phase, never interleaved.
  c.rl.method = "naive_multiturn"
  assert schedule.phases(c) == [("naive_multiturn", 5)]
  c.rl.method = "single_turn"
  assert schedule.phases(c) == [("single_turn", 5)]
  c.rl.method = "no_such_method"
  with pytest.raises(configs.ConfigError, match="config.rl.method"):
    configs.validate(c)


def test_offline_first_attempts_come_from_the_reference(tmp_path):
  c = _fast_config()
  c.rollout.num_samples = 2
  c.rollout.prompt_buckets = (192, 384)  # offline prompts hold prompt + y1 + instruction
  mesh, _ = setup_lib.make_meshes(c)
  model_cfg, ref, tok = setup_lib.load_base(c, str(tmp_path), mesh)
  template = setup_lib.chat_template(c, model_cfg, tok)
  task = tasks.load_task("math", "train")
  _, ids = tasks.encode_prompts(task, tok, template, None, 192)
  instr = template.next_turn_ids(tok, task.correction())
  sampler = setup_lib.make_sampler(c, model_cfg, None, tok.pad_id)  # one device
  rc = setup_lib.rollout_config(c, template.stop_ids(tok))
  # A different policy, so base-model and policy attempts differ.
  policy = jax.tree.map(lambda x: x * 1.5, ref)
  rng = jax.random.key(7)
  ep = offline.training_episodes(
    sampler, policy, ref, ids[:4], instr, rc, rng, num_offline=2, row_offset=0,
    decode=tok.decode,
  )  # fmt: skip
  assert ep.prompt_index.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
  exp = ep.experience
  n1 = ((exp.turn == 1) & exp.valid).sum(axis=1)
  n2 = ((exp.turn == 2) & exp.valid).sum(axis=1)
  assert (n1[:4] > 0).all() and (n1[4:] == 0).all() and (n2 > 0).all()
  assert all(len(t) == 2 for t in ep.texts) and ep.lengths.shape == (8, 2)
  # The offline rows' attempt 1 is exactly what the reference samples for those rows.
  rc1 = dataclasses.replace(rc, num_attempts=1)
  first = rollout.run_episodes(sampler, ref, ids[2:4], instr, rc1, jax.random.fold_in(rng, 1),
                               row_offset=4, reserve_instruction_len=len(instr),
                               decode=tok.decode)  # fmt: skip
  assert [a[0] for a in ep.attempt_tokens[4:]] == [a[0] for a in first.attempt_tokens]
  # ... and sits in the stream as prompt (turn 0) right before the instruction and attempt 2.
  for r in range(4, 8):
    valid = exp.tokens[r][exp.valid[r]].tolist()
    y1, y2 = ep.attempt_tokens[r]
    start = len(ids[2 + (r - 4) // 2])
    assert valid[start : start + len(y1) + len(instr)] == y1 + instr
    assert valid[-len(y2) :] == y2


@pytest.mark.slow
def test_sigterm_saves_and_exits_cleanly(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  flags = ["--config=experiments/score_math.py:tiny", f"--workdir={tmp_path}",
           "--config.checkpoint.every_steps=100", "--config.rollout.max_new_tokens=8",
           "--config.rollout.gen_buckets=(8,)"]  # fmt: skip
  proc = subprocess.Popen([sys.executable, "-m", "score_jax.main", *flags], cwd=REPO, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
  deadline = time.monotonic() + 600
  while not (tmp_path / "metrics.jsonl").exists() or not _records(tmp_path):
    assert proc.poll() is None and time.monotonic() < deadline
    time.sleep(0.5)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  steps = [r["step"] for r in _records(tmp_path)]
  saved = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
  assert saved == [steps[-1]] and steps[-1] < 6  # saved where it stopped, not at every_steps
