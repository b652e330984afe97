"""Attempts cut at max_new_tokens are closed with the end-of-turn ids before the next turn.

Without them a stream would read `[prompt][y1][\\n<start_of_turn>user ...]`, which no chat
template renders; with `RolloutConfig.close_ids` every episode stream (online and offline) is
the template's rendering of the conversation, and the inserted ids are never trained on.
"""

import dataclasses
import functools

import jax
import ml_collections
import numpy as np
import pytest

from score_jax.data import chat, prompts, tokenizer
from score_jax.generation import offline, rollout, sampling
from score_jax.models import decoder, presets
from score_jax.rl import scoring
from score_jax.trainer import setup as setup_lib
from tests import numerics, streams
from tests.helpers import diverse_params

pytestmark = pytest.mark.numerics

QUESTIONS = ["What is 12+7?", "Solve 3x = 12 for x.", "Is 91 prime?", "2^5 = ?"]
INSTRUCTION = prompts.correction_instruction("math_short")
CORPUS = (
  [
    f"Problem {i}: compute {i} + {i * 7} and {i} * {i + 3}. The answer is {i * 8}."
    for i in range(300)
  ]
  + [INSTRUCTION] * 20
  + QUESTIONS
)
MAX_NEW = 6
TEMPERATURE = 0.9


@dataclasses.dataclass(frozen=True)
class Setup:
  tok: tokenizer.Tokenizer
  template: chat.ChatTemplate
  config: object
  params: dict
  prompt_ids: list
  instr_ids: list
  close_ids: tuple
  stop_ids: tuple

  def sampler(self, prompt_buckets=(64,)):
    """A fresh sampler whose append buckets fit the instruction alone (one bucket) and with
    the close ids (the next), so a call whose append shape followed the rows would recompile."""
    buckets = (len(self.instr_ids), 64)
    return sampling.Sampler(self.config, prompt_buckets=prompt_buckets, append_buckets=buckets)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """A real SentencePiece tokenizer in Gemma's chat format and tiny-gemma2.

  Gemma's template trims message text; this copy keeps it, so a decoded attempt renders as is.
  """
  path = tokenizer.train_sentencepiece(
    CORPUS, str(tmp_path_factory.mktemp("spm") / "tok"), vocab_size=512
  )
  tok = tokenizer.SentencePieceTokenizer(path)
  config = presets.get_preset("tiny-gemma2", vocab_size=512)
  template = chat.get_template("gemma", trim_content=False)
  prompt_ids, instr_ids, stop_ids = rollout.chat_inputs(tok, template, QUESTIONS, INSTRUCTION)
  close_ids = tuple(template.close_turn_ids(tok))
  assert close_ids == (tok.id_of("<end_of_turn>"),)
  params = diverse_params(config)
  return Setup(tok, template, config, params, prompt_ids, instr_ids, close_ids, stop_ids)


def row0_stops_early(run, stop_ids: tuple[int, ...]) -> tuple[int, ...]:
  """Stop ids that end row 0's first attempt early while (almost all) other rows are cut.

  A first run with the template's stop ids (which a random model hardly samples) picks row 0's
  third token as an extra stop id: the same compiled programs with the same key then repeat
  every row's tokens up to its first stop id, bit for bit.
  """
  probe = run(stop_ids)
  return (*stop_ids, probe.attempt_tokens[0][0][2])


def check_layout(s: Setup, ep, r: int, stop_ids, prompt: list[int], first_sampled: int = 1):
  """Row r's stream: the prompt, then each attempt, the close ids iff it was cut, the instruction.

  Attempts before `first_sampled` are part of the prompt (turn 0), as offline first attempts.
  """
  exp, k = ep.experience, len(ep.attempt_tokens[r])
  want, turns = list(prompt), [0] * len(prompt)
  for a, y in enumerate(ep.attempt_tokens[r], start=1):
    assert ep.truncated[r, a - 1] == (y[-1] not in stop_ids)
    want += y
    turns += [a if a >= first_sampled else 0] * len(y)
    if a < k:
      closed = list(s.close_ids) if ep.truncated[r, a - 1] else []
      want += closed + s.instr_ids
      turns += [0] * (len(closed) + len(s.instr_ids))
  v = exp.valid[r]
  assert exp.tokens[r][v].tolist() == want
  assert exp.turn[r][v].tolist() == turns
  assert exp.positions[r][v].tolist() == list(range(len(want)))
  # Only sampled tokens are trained on and carry a log-prob; the close ids are not.
  np.testing.assert_array_equal(exp.loss_mask[r], v & (exp.turn[r] > 0))
  assert (exp.logp[r][~exp.loss_mask[r]] == 0).all()


def rendered_text(s: Setup, question: str, attempts: list[list[int]]) -> str:
  """BOS + the template's rendering of [user q, model y1, user p, ...] + the last attempt."""
  conv = [{"role": "user", "content": question}]
  for y in attempts[:-1]:
    conv += [
      {"role": "assistant", "content": s.tok.decode(y)},
      {"role": "user", "content": INSTRUCTION},
    ]
  return s.tok.decode([s.tok.bos_id]) + s.template.render(conv) + s.tok.decode(attempts[-1])


def check_logprobs(s: Setup, params, ep, temperature: float):
  """The sampler's log-probs equal the reference scorer's and the update's (rl.scoring)."""
  exp = ep.experience
  want = streams.stream_logprobs(
    s.config, params, exp.tokens, exp.positions, exp.valid, temperature
  )
  got, _ = scoring.stream_scores(s.config, params, exp, temperature)
  logits, _ = decoder.forward(s.config, params, exp.tokens, exp.positions, exp.valid)
  scale = np.abs(np.asarray(logits)[exp.valid]).max()
  logit_err = numerics.logit_bound(s.config, exp.tokens.shape[1], scale)
  logp_err = numerics.logprob_bound(logit_err, scale, s.config.vocab_size, temperature)
  for turn in np.unique(exp.turn[exp.loss_mask]):
    sel = exp.loss_mask & (exp.turn == turn)
    numerics.assert_close(exp.logp, want, logp_err, where=sel, what=f"turn {turn} vs reference")
    numerics.assert_close(exp.logp, got, logp_err, where=sel, what=f"turn {turn} vs rl.scoring")


def test_truncated_attempts_are_closed_like_the_template(setup):
  s = setup
  sampler = s.sampler()
  rc = rollout.RolloutConfig(3, 2, MAX_NEW, TEMPERATURE, close_ids=s.close_ids)
  key = jax.random.key(11)

  def run(stop_ids):
    rc_ = dataclasses.replace(rc, stop_ids=stop_ids)
    return rollout.run_episodes(
      sampler, s.params, s.prompt_ids, s.instr_ids, rc_, key, decode=s.tok.decode
    )

  stop_ids = row0_stops_early(run, s.stop_ids)
  ep = run(stop_ids)
  assert not ep.truncated[0, 0] and ep.truncated[1:, 0].sum() >= 5
  # The template's text between two attempts tokenizes to exactly close ids + instruction ids.
  between = s.template.end_of_turn + s.template.next_turn(INSTRUCTION)
  assert s.tok.encode(between) == [*s.close_ids, *s.instr_ids]
  for r in range(8):
    check_layout(s, ep, r, stop_ids, s.prompt_ids[ep.prompt_index[r]])
  # Rows whose turn boundaries are all closed cuts (not an ordinary token that is a stop id
  # here) are the template's rendering of their conversation, text for text.
  rendered = np.flatnonzero(ep.truncated[:, :-1].all(axis=1))
  assert len(rendered) >= 4
  for r in rendered:
    text = s.tok.decode(ep.experience.tokens[r][ep.experience.valid[r]].tolist())
    assert text == rendered_text(s, QUESTIONS[ep.prompt_index[r]], ep.attempt_tokens[r])
  check_logprobs(s, s.params, ep, TEMPERATURE)

  # Every row's first token a stop id: no row is closed after attempt 1 (its append holds the
  # instruction alone) yet it keeps the append shape of the calls that close rows.
  firsts = tuple(dict.fromkeys(y[0] for y, _, _ in ep.attempt_tokens))
  assert len(firsts) <= sampling.MAX_STOP_IDS
  ep = run(firsts)
  assert (ep.lengths[:, 0] == 1).all() and not ep.truncated[:, 0].any()
  for r in range(8):
    check_layout(s, ep, r, firsts, s.prompt_ids[ep.prompt_index[r]])
  check_logprobs(s, s.params, ep, TEMPERATURE)
  assert {k: f._cache_size() for k, f in sampler.jitted_functions().items()} == {
    "prefill": 1,
    "append": 1,
    "decode": rc.num_attempts if sampler.decode_layout else 1,  # CPU: one per attempt position
  }


def test_offline_continue_closes_truncated_base_attempts(setup):
  s = setup
  sampler = s.sampler(prompt_buckets=(64, 128))  # offline prompts hold prompt + y1 + instruction
  policy = jax.tree.map(lambda x: x * 1.25, s.params)  # so base and policy attempts differ
  rc = rollout.RolloutConfig(3, 2, MAX_NEW, TEMPERATURE, close_ids=s.close_ids)
  common = dict(reserve_instruction_len=len(s.instr_ids), decode=s.tok.decode)
  cont = functools.partial(
    offline.continue_base_attempts, sampler, policy, s.params, s.prompt_ids, s.instr_ids
  )
  key = jax.random.key(5)

  def run(stop_ids):
    return cont(dataclasses.replace(rc, stop_ids=stop_ids), key, 0, common)

  stop_ids = row0_stops_early(run, s.stop_ids)
  ep = run(stop_ids)
  assert not ep.truncated[0, 0] and ep.truncated[1:, 0].sum() >= 5
  for r in range(8):
    check_layout(s, ep, r, stop_ids, s.prompt_ids[ep.prompt_index[r]], first_sampled=2)
  check_logprobs(s, policy, ep, TEMPERATURE)


def test_no_close_ids_keeps_the_unclosed_layout(setup):
  s = setup
  rc = rollout.RolloutConfig(2, 1, MAX_NEW, TEMPERATURE, stop_ids=s.stop_ids)
  assert rc.close_ids == ()
  ep = rollout.run_episodes(s.sampler(), s.params, s.prompt_ids, s.instr_ids, rc, jax.random.key(0))
  assert ep.truncated[:, 0].any()
  unclosed = dataclasses.replace(s, close_ids=())
  for r in range(4):
    check_layout(unclosed, ep, r, s.stop_ids, s.prompt_ids[r])


def test_close_ids_errors_before_compiling(setup):
  s = setup
  sampler = sampling.Sampler(s.config, prompt_buckets=(64,), append_buckets=(len(s.instr_ids),))
  rc = rollout.RolloutConfig(2, 1, MAX_NEW, stop_ids=s.stop_ids, close_ids=s.close_ids)
  run = functools.partial(rollout.run_episodes, sampler, s.params, s.prompt_ids, s.instr_ids)
  n = len(s.instr_ids) + 1
  with pytest.raises(ValueError, match=f"instruction \\+ close_ids length {n} exceeds"):
    run(rc, jax.random.key(0))
  with pytest.raises(ValueError, match=r"close_ids\[0\] has token id 600 outside"):
    run(dataclasses.replace(rc, close_ids=(600,)), jax.random.key(0))
  # One attempt has no turn boundary, so the close ids are never needed.
  rollout.run_episodes(
    sampler, s.params, s.prompt_ids, [], dataclasses.replace(rc, num_attempts=1), jax.random.key(0)
  )
  assert sampler.append_fn._cache_size() == 0


def test_rollout_config_passes_close_ids():
  config = ml_collections.ConfigDict(
    dict(
      rollout=dict(
        num_attempts=2, num_samples=4, max_new_tokens=8, temperature=1.0, top_k=0, top_p=1.0
      )
    )
  )
  assert setup_lib.rollout_config(config, [1, 5]).close_ids == ()
  rc = setup_lib.rollout_config(config, [1, 5], greedy=True, close_ids=[5])
  assert rc.close_ids == (5,) and rc.stop_ids == (1, 5) and rc.temperature == 0.0
