"""What every evaluation of the suite shares: the parameters chosen, the model, the sampler.

Owns which parameters a workdir is evaluated with (`resolve_checkpoint`: eval.checkpoint =
best | latest | <step> of WORKDIR/checkpoints; a method that trains nothing and has no
checkpoint is its base model, step 0), building the `Context` (model, tokenizer, template,
sampler, held-out set, policy and base params placed for the sampler) and the rollout settings
and capacity checks the evaluations share.
"""

import dataclasses
import os
from typing import Any

import jax
from absl import logging

from score_jax import configs, storage
from score_jax.generation import rollout, sampling
from score_jax.parallel import mesh as mesh_lib
from score_jax.rl import algorithms, optim
from score_jax.trainer import checkpoint as checkpoint_lib
from score_jax.trainer import evaluate as evaluate_lib
from score_jax.trainer import setup as setup_lib

PyTree = Any
BASE = "base"  # the checkpoint label of a base-model evaluation


@dataclasses.dataclass
class Context:
  """One evaluated model and everything an evaluation needs to sample and score it."""

  config: Any
  workdir: str
  step: int
  checkpoint: str  # best | latest | <step> as configured, or 'base' (untrained method)
  method: algorithms.Method
  model_cfg: Any
  tok: Any
  template: Any
  sampler: sampling.Sampler
  pool: Any
  params: PyTree  # the evaluated params, placed for the sampler
  base_params: PyTree | None  # the base (reference) model's, when an evaluation needs them
  eval_set: evaluate_lib.EvalSet

  @property
  def shards(self) -> int:
    """Batch shards of the sampler's mesh: every sampler call's rows must divide by them."""
    return mesh_lib.batch_shards(self.sampler.mesh) if self.sampler.mesh is not None else 1

  def rng(self, salt: int) -> jax.Array:
    """One evaluation's key: the run's seed folded with the evaluation's own salt."""
    return jax.random.fold_in(jax.random.key(self.config.seed), salt)

  def rollout_config(
    self, num_attempts: int, *, temperature: float | None = None, samples: int = 1
  ) -> rollout.RolloutConfig:
    """Greedy (as eval.greedy says) K-attempt settings, or plain sampling at `temperature`.

    Sampled evaluations use temperature alone (no top-k / top-p), as the paper reports them.
    """
    c = self.config
    rc = setup_lib.rollout_config(
      c,
      self.template.stop_ids(self.tok),
      greedy=c.eval.greedy if temperature is None else True,
      num_attempts=num_attempts,
      max_new=c.eval.max_new_tokens,
      close_ids=self.template.close_turn_ids(self.tok),
    )
    if temperature is not None:
      return dataclasses.replace(rc, temperature=float(temperature), samples_per_prompt=samples)
    return dataclasses.replace(rc, samples_per_prompt=1)

  def check_attempts(self, rc: rollout.RolloutConfig, prompt_ids, field: str) -> None:
    """The sampler's buckets must hold K attempts (ConfigError naming `field` if not); a warning
    when K full attempts could run past the model's context (max_seq_len)."""
    instruction = len(self.eval_set.instruction)
    try:
      slots = rollout.extra_slots(self.sampler, rc, instruction)
    except ValueError as e:
      raise configs.ConfigError(
        f"config.{field} = {rc.num_attempts}: the sampler cannot hold {rc.num_attempts} "
        f"attempts ({e}); see config.rollout.gen_buckets / append_buckets."
      ) from e
    longest = max(len(p) for p in prompt_ids)
    turn = instruction + len(rc.close_ids)  # an appended turn: close ids, then the instruction
    positions = longest + rc.num_attempts * rc.max_new_tokens + (rc.num_attempts - 1) * turn
    if positions > self.model_cfg.max_seq_len:
      logging.warning(
        "config.%s = %d: a problem may reach position %d (%d cache slots) past the model's "
        "max_seq_len %d; attempts that long are outside the context it was trained for.",
        field,
        rc.num_attempts,
        positions,
        slots,
        self.model_cfg.max_seq_len,
      )

  def check_continued_prompts(self, lengths, what: str) -> None:
    """Prompts that already hold attempt 1 must fit a prompt bucket (ConfigError if not)."""
    buckets = tuple(self.config.rollout.prompt_buckets)
    if max(lengths) > max(buckets):
      raise configs.ConfigError(
        f"config.rollout.prompt_buckets = {buckets}: {what} prompts hold attempt 1 and the "
        f"instruction, up to {max(lengths)} tokens; add a bucket >= {max(lengths)}."
      )


def pick_step(ckpt: checkpoint_lib.Checkpointer, which: str) -> int:
  """The step eval.checkpoint names; best falls back to latest when no step has metrics."""
  step = {"best": ckpt.best_step, "latest": ckpt.latest_step}.get(which, lambda: int(which))()
  if which == "best" and step is None:
    step = ckpt.latest_step()
  if step is None:
    raise FileNotFoundError(f"{ckpt.directory}: no complete checkpoint to evaluate")
  return step


def resolve_checkpoint(config, workdir: str) -> tuple[int, str]:
  """(step, label) of the params to evaluate; (0, 'base') for an untrained method's base model."""
  directory = os.path.join(workdir, "checkpoints")
  which = config.eval.checkpoint
  if not algorithms.method(config.rl.method).phases and which in ("best", "latest"):
    # Opening a Checkpointer creates its directory: look before touching an untrained workdir.
    if not storage.isdir(directory):
      return 0, BASE
    with checkpoint_lib.Checkpointer(directory, async_save=False) as ckpt:
      if not ckpt.all_steps():
        return 0, BASE
  with checkpoint_lib.Checkpointer(directory, async_save=False) as ckpt:
    return pick_step(ckpt, which), which


def build(config, workdir: str, pool, step: int, label: str, *, need_base: bool) -> Context:
  """The Context of params `label`/`step` (resolve_checkpoint); base params kept if needed."""
  mesh, sampler_mesh = setup_lib.make_meshes(config)
  setup_lib.check_process_batch(config, sampler_mesh)
  model_cfg, base, tok = setup_lib.load_base(config, workdir, mesh)
  template = setup_lib.chat_template(config, model_cfg, tok)
  eval_set = evaluate_lib.make_eval_set(config, tok, template)
  params = base
  if label != BASE:
    optimizer = optim.make_optimizer(setup_lib.optim_config(config))
    abstract = optim.abstract_train_state(model_cfg, optimizer, mesh)
    directory = os.path.join(workdir, "checkpoints")
    with checkpoint_lib.Checkpointer(directory, async_save=False) as ckpt:
      params = ckpt.restore(step, abstract)[0].params
  base_params = setup_lib.sampler_params(base, mesh, sampler_mesh, model_cfg) if need_base else None
  del base
  return Context(
    config=config,
    workdir=workdir,
    step=step,
    checkpoint=label,
    method=algorithms.method(config.rl.method),
    model_cfg=model_cfg,
    tok=tok,
    template=template,
    sampler=setup_lib.make_sampler(config, model_cfg, sampler_mesh, tok.pad_id),
    pool=pool,
    params=setup_lib.sampler_params(params, mesh, sampler_mesh, model_cfg),
    base_params=base_params,
    eval_set=eval_set,
  )
