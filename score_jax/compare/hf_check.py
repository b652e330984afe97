"""Greedy two-attempt episodes through transformers, compared with the ones our sampler wrote.

  python -m score_jax.compare.hf_check --workdir=/tmp/smollm2 --run=score_seed0 --problems=50
  python -m score_jax.compare.hf_check --workdir=/tmp/smollm2 --run=base --problems=200

The check behind two claims of the `compare` job: the base model evaluated through our sampler
gives transformers' greedy tokens (base parity), and an exported policy
(WORKDIR/export/<run>) loaded by transformers answers as the trained policy did in our
evaluation (WORKDIR/eval/<run>.json). For each problem, transformers' `generate` (greedy; one
problem at a time by default, or --batch_size problems left-padded under a mask) writes attempt 1
from the chat prompt ids, then attempt 2 from the prompt, attempt 1 (closed as our rollout closes
it) and the correction instruction: the same ids our rollout feeds. The attempts' texts are
compared with ours.

Needs torch and transformers (the `test` extra: pip install -e '.[test]').
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

from absl import app, flags

from score_jax import tasks
from score_jax.data import chat
from score_jax.data import tokenizer as tokenizer_lib


@dataclasses.dataclass
class Parity:
  """How many problems' attempts are identical, and the first differing ones (for the log)."""

  num_problems: int
  num_equal: int
  differing: list[dict]

  @property
  def rate(self) -> float:
    return self.num_equal / max(self.num_problems, 1)


def _import_transformers():
  try:
    import torch
    import transformers
  except ImportError as e:
    raise ImportError(
      "hf_check compares against transformers: install the test extra "
      "(pip install -e '.[test]') for torch and transformers"
    ) from e
  return torch, transformers


def _cut(gen: list[int], stop_ids: Sequence[int]) -> list[int]:
  """The generated ids up to and including the first stop id (padding after it dropped)."""
  for i, t in enumerate(gen):
    if t in stop_ids:
      return gen[: i + 1]
  return gen


def hf_attempts(
  model,
  prompts: Sequence[Sequence[int]],
  instruction_ids: Sequence[int],
  close_ids: Sequence[int],
  stop_ids: Sequence[int],
  max_new_tokens: int,
  num_attempts: int = 2,
) -> list[list[list[int]]]:
  """transformers' greedy attempts of a batch of problems: [problem][attempt] token ids.

  Contexts are left-padded with an attention mask (transformers derives positions from it), so a
  batch gives each problem the tokens it gets alone up to float rounding at near-ties; a batch of
  one is transformers' plain `generate`. A stop id is kept when sampled.
  """
  torch, _ = _import_transformers()
  contexts, outs = [list(p) for p in prompts], [[] for _ in prompts]
  for a in range(num_attempts):
    for ctx, out in zip(contexts, outs):
      if a:
        ctx += [] if out[-1] and out[-1][-1] in stop_ids else list(close_ids)
        ctx += list(instruction_ids)
    width = max(len(c) for c in contexts)
    ids = torch.tensor([[stop_ids[0]] * (width - len(c)) + c for c in contexts])
    mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in contexts])
    with torch.no_grad():
      gen = model.generate(
        ids,
        attention_mask=mask,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=list(stop_ids),
        pad_token_id=stop_ids[0],
      )[:, width:].tolist()
    for ctx, out, g in zip(contexts, outs, gen):
      out.append(_cut(g, stop_ids))
      ctx += out[-1]
  return outs


def compare_episodes(
  model,
  tok,
  template: chat.ChatTemplate,
  task,
  episodes: Sequence[dict],
  system,
  max_new: int,
  batch_size: int = 1,
) -> Parity:
  """transformers' attempts on each episode's problem vs the episode's attempt texts."""
  by_id = {ex.id: ex for ex in task.examples}
  stop = template.stop_ids(tok)
  instr = template.next_turn_ids(tok, task.correction())
  close = template.close_turn_ids(tok)
  num_attempts = {len(ep["attempts"]) for ep in episodes}
  if len(num_attempts) > 1:
    raise ValueError(f"episodes have different attempt counts: {sorted(num_attempts)}")
  equal, differing = 0, []
  for start in range(0, len(episodes), batch_size):
    chunk = episodes[start : start + batch_size]
    prompts = [
      template.first_turn_ids(tok, task.first_turn(by_id[ep["id"]]), system) for ep in chunk
    ]
    theirs = hf_attempts(model, prompts, instr, close, stop, max_new, len(chunk[0]["attempts"]))
    for ep, attempts in zip(chunk, theirs):
      texts = [tok.decode([t for t in g if t not in stop]) for g in attempts]
      if texts == list(ep["attempts"]):
        equal += 1
      else:
        differing.append({"id": ep["id"], "ours": ep["attempts"], "transformers": texts})
  return Parity(len(episodes), equal, differing)


def load_hf_model(path: str):
  """A transformers causal LM in float32 from an exported dir or a .gguf file."""
  torch, transformers = _import_transformers()
  kw = {"dtype": torch.float32}
  if path.endswith(".gguf"):
    kw["gguf_file"] = os.path.basename(path)
    path = os.path.dirname(path)
  return transformers.AutoModelForCausalLM.from_pretrained(path, **kw).eval()


def _run_tokenizer(model_path: str):
  if model_path.endswith(".gguf"):  # the base: the tokenizer rebuilt from the GGUF metadata
    import gguf

    from score_jax.models import gguf_checkpoint

    return gguf_checkpoint.tokenizer_from_gguf(gguf.GGUFReader(model_path))
  return tokenizer_lib.load_tokenizer(model_path)


def check_run(
  workdir: str, run: str, problems: int, model_path: str | None = None, batch_size: int = 1
) -> Parity:
  """transformers' greedy attempts vs our final evaluation of `run` (WORKDIR/eval/<run>.json).

  The model is the run's export (WORKDIR/export/<run>) unless `model_path` names another: the
  base run's parity check passes the checkpoint the job started from (e.g. the GGUF file).
  """
  with open(os.path.join(workdir, "eval", f"{run}.json")) as f:
    episodes = json.load(f)["episodes"][:problems]
  with open(os.path.join(workdir, "runs", run, "config.json")) as f:
    c = json.load(f)  # the run's resolved config
  with open(os.path.join(workdir, "compare_config.json")) as f:
    final_split = json.load(f)["compare"]["final_split"]
  model_path = model_path or os.path.join(workdir, "export", run)
  tok = _run_tokenizer(model_path)
  template = chat.get_template(c["model"]["chat_template"] or "chatml")
  d = c["data"]
  task = tasks.load_task(d["eval_task"] or d["task"], final_split, "", d["procedural_size"])
  max_new = c["eval"]["max_new_tokens"] or c["rollout"]["max_new_tokens"]
  model = load_hf_model(model_path)
  system = d["system"] or None
  return compare_episodes(model, tok, template, task, episodes, system, max_new, batch_size)


def check_export(workdir: str, run: str, problems: int, batch_size: int = 1) -> Parity:
  """The exported policy of `run` in transformers vs our final evaluation of that run."""
  return check_run(workdir, run, problems, batch_size=batch_size)


def check_base(workdir: str, problems: int, batch_size: int = 1) -> Parity:
  """Base parity: the start checkpoint in transformers vs our evaluation of the base model."""
  from score_jax.models import loading

  with open(os.path.join(workdir, "compare_config.json")) as f:
    run = f"base_seed{json.load(f)['seed']}"  # as the compare job names it
  with open(os.path.join(workdir, "runs", run, "config.json")) as f:
    checkpoint = json.load(f)["model"]["checkpoint"]
  return check_run(workdir, run, problems, loading.resolve_named(checkpoint), batch_size)


_WORKDIR = flags.DEFINE_string("workdir", None, "A compare job's workdir.")
_RUN = flags.DEFINE_string(
  "run", "score_seed0", "The exported run (WORKDIR/export/<run>), or 'base' for base parity."
)
_PROBLEMS = flags.DEFINE_integer("problems", 50, "Problems of its final evaluation to check.")
_BATCH = flags.DEFINE_integer(
  "batch_size", 1, "Problems per transformers generate call (1: each alone, no padding)."
)


def main(argv):
  del argv
  if _RUN.value == "base":
    parity = check_base(_WORKDIR.value, _PROBLEMS.value, _BATCH.value)
  else:
    parity = check_export(_WORKDIR.value, _RUN.value, _PROBLEMS.value, _BATCH.value)
  for d in parity.differing[:5]:
    print(f"differs: {json.dumps(d)}")
  print(
    f"{_RUN.value}: transformers' greedy attempts equal ours on {parity.num_equal} of "
    f"{parity.num_problems} problems ({100 * parity.rate:.1f}%)"
  )


if __name__ == "__main__":
  flags.mark_flag_as_required("workdir")
  app.run(main)
