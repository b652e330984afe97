"""Sharded, jitted update steps, built per algorithm on demand.

`Steps` binds everything static (model and loss settings, optimizer, mesh, micro-batches)
outside jit; `steps.update(name)` returns the jitted step of algorithm `name` (rl.algorithms),
compiled on first use, with explicit NamedShardings and a donated TrainState. Each takes
(state, ref_params, Experience, Coefficients) -- an SFT step (state, Experience) -- and places
the Experience itself: validated, cast and sharded (rows over the mesh's data x fsdp).

The update math is `score_jax.rl.update`.
"""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from score_jax.models.config import ModelConfig
from score_jax.parallel import mesh as mesh_lib
from score_jax.rl import algorithms, losses, optim, update
from score_jax.rl import kl as kl_lib
from score_jax.rl.algorithms import Coefficients
from score_jax.rl.experience import Experience

PyTree = Any
# The fields each kind of step takes (others must be None).
POLICY_FIELDS = (
  "tokens",
  "positions",
  "valid",
  "turn",
  "loss_mask",
  "logp",
  "rewards",
  "normalizer",
)
SFT_FIELDS = ("tokens", "positions", "valid", "loss_mask", "normalizer")
PACKED_SFT_FIELDS = ("tokens", "positions", "valid", "loss_mask", "segments", "normalizer")
SCORE_FIELDS = ("tokens", "positions", "valid")


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """The objective's static settings (its scalar weights are traced: algorithms.Coefficients)."""

  samples_per_prompt: int = 2  # g: RLOO group size (consecutive rows share a prompt)
  num_attempts: int = 2  # K: attempts per training episode (rewards_ba has K columns)
  temperature: float = 1.0  # the sampler's temperature: log-probs are recomputed under it
  kl_estimator: str = "k1_reward"  # one of kl.ESTIMATORS except the biased 'k1'
  aggregation: str = "token_mean"  # one of losses.AGGREGATIONS
  baseline: str = "rloo"  # one of losses.BASELINES
  kl_clamp: float = kl_lib.DEFAULT_CLAMP  # |log pi - log ref| clamp before any estimator
  # Tokens one attempt samples at most (the rollout's max_new_tokens). Set, an RL update computes
  # logits only at the slots before its loss tokens (at most num_attempts * this per row); None
  # computes them at every slot.
  max_new_tokens: int | None = None

  @property
  def max_loss_tokens(self) -> int | None:
    """The most loss tokens a row of an RL update can hold (None: not bounded)."""
    return None if self.max_new_tokens is None else self.num_attempts * self.max_new_tokens

  def __post_init__(self):
    def need(ok: bool, field: str, msg: str):
      if not ok:
        raise ValueError(f"LossConfig.{field}: {msg} (got {getattr(self, field)!r})")

    need(
      self.kl_estimator in kl_lib.ESTIMATORS and self.kl_estimator != "k1",
      "kl_estimator",
      f"must be one of {tuple(e for e in kl_lib.ESTIMATORS if e != 'k1')}",
    )
    need(
      self.aggregation in losses.AGGREGATIONS,
      "aggregation",
      f"must be one of {losses.AGGREGATIONS}",
    )
    need(self.baseline in losses.BASELINES, "baseline", f"must be one of {losses.BASELINES}")
    need(
      isinstance(self.samples_per_prompt, int) and self.samples_per_prompt >= 1,
      "samples_per_prompt",
      "must be an int >= 1",
    )
    need(
      self.baseline == "none" or self.samples_per_prompt >= 2,
      "samples_per_prompt",
      f"must be >= 2 for baseline={self.baseline!r}",
    )
    need(
      isinstance(self.num_attempts, int) and self.num_attempts >= 1,
      "num_attempts",
      "must be an int >= 1",
    )
    need(self.temperature > 0, "temperature", "must be > 0 (greedy samples have no log-probs)")
    need(self.kl_clamp > 0, "kl_clamp", "must be > 0")
    need(
      self.max_new_tokens is None
      or (isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1),
      "max_new_tokens",
      "must be None or an int >= 1",
    )


class JitStep:
  """A jitted step plus its host side: validate, cast and place the Experience, enter the rules.

  Call it as fn(*head, experience[, coefficients]); `head` is the state arguments
  (state, ref_params) or (state,) or (params, ref_params).
  """

  def __init__(
    self,
    fn: Callable,
    setup: update.StepSetup,
    mesh: Mesh,
    head_shardings: tuple,
    out_shardings,
    *,
    accepts: tuple[tuple[str, ...], ...],
    takes_coefficients: bool = False,
    donate: tuple[int, ...] = (),
    options: dict[str, Any] | None = None,
  ):
    self.setup, self.mesh, self.accepts = setup, mesh, accepts
    self.takes_coefficients = takes_coefficients
    self._fn, self._head, self._out = fn, tuple(head_shardings), out_shardings
    self._donate, self._options = donate, options
    self._jitted: dict[tuple[str, ...], Any] = {}  # per set of present fields (packed or not)

  def place(self, batch: Experience) -> Experience:
    """The batch validated, cast to its dtypes and placed with its NamedShardings."""
    if not isinstance(batch, Experience):
      raise TypeError(f"a step takes an rl.experience.Experience, got {type(batch).__name__}")
    lc = self.setup.loss_cfg
    present = batch.present()
    needs = next((a for a in self.accepts if set(a) == set(present)), self.accepts[0])
    batch.validate(
      self.mesh,
      num_attempts=lc.num_attempts,
      samples_per_prompt=lc.samples_per_prompt,
      num_microbatches=self.setup.num_microbatches,
      vocab_size=self.setup.model_cfg.vocab_size,
      needs=needs,
      max_loss_tokens=lc.max_loss_tokens,
    )
    return batch.place(self.mesh)

  def _jit(self, batch: Experience):
    key = batch.present()
    if key not in self._jitted:
      shardings = (*self._head, batch.shardings(self.mesh))
      if self.takes_coefficients:
        repl = NamedSharding(self.mesh, P())
        shardings += (jax.tree.map(lambda _: repl, Coefficients.of()),)
      self._jitted[key] = jax.jit(
        self._fn,
        in_shardings=shardings,
        out_shardings=self._out,
        donate_argnums=self._donate,
        compiler_options=self._options,
      )
    return self._jitted[key]

  def _args(self, args: tuple) -> tuple:
    n = len(self._head) + 1 + self.takes_coefficients
    if len(args) != n:
      what = "Experience, Coefficients" if self.takes_coefficients else "Experience"
      raise TypeError(f"this step takes {len(self._head)} state argument(s), then {what}")
    if self.takes_coefficients and not isinstance(args[-1], Coefficients):
      raise TypeError(f"the last argument must be rl.algorithms.Coefficients, got {args[-1]!r}")
    i = len(self._head)
    return (*args[:i], self.place(args[i]), *args[i + 1 :])

  def cache_size(self) -> int:
    """Programs compiled so far (a step must not recompile between calls of one shape)."""
    return sum(f._cache_size() for f in self._jitted.values())

  def __call__(self, *args):
    args = self._args(args)
    with mesh_lib.use_rules(self.mesh):
      return self._jit(args[len(self._head)])(*args)

  def lower(self, *args):
    """Lowers for these arguments (e.g. for `.compile().cost_analysis()`)."""
    args = self._args(args)
    with mesh_lib.use_rules(self.mesh):
      return self._jit(args[len(self._head)]).lower(*args)


class Steps:
  """The jitted steps of one (model, loss settings, optimizer, mesh), built on first use."""

  def __init__(
    self,
    model_cfg: ModelConfig,
    loss_cfg: LossConfig,
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
    num_microbatches: int = 1,
    schedule: Callable | None = None,
    compiler_options: dict[str, Any] | None = None,
  ):
    """Binds the static settings; nothing is built or compiled until a step is asked for.

    Args:
      model_cfg: the decoder (policy and reference share it; only params differ).
      loss_cfg: the objective's static settings; num_attempts = K of the run's episodes.
      optimizer: from `optim.make_optimizer`; `schedule` (optim.make_schedule) reports the lr.
      mesh: from `parallel.mesh.make_mesh`.
      num_microbatches: gradient accumulation factor; the result equals one full batch.
      schedule: the optimizer's lr schedule, reported as metric 'lr' (omitted when None).
      compiler_options: XLA options for every step (tests use FAST_COMPILE on CPU).
    """
    if not isinstance(loss_cfg, LossConfig):
      raise TypeError(f"loss_cfg must be a steps.LossConfig, got {type(loss_cfg).__name__}")
    if not isinstance(num_microbatches, int) or num_microbatches < 1:
      raise ValueError(f"num_microbatches must be an int >= 1, got {num_microbatches!r}")
    self.mesh = mesh
    self.state_shardings = optim.train_state_shardings(model_cfg, optimizer, mesh)
    self.param_shardings = self.state_shardings.params
    self._setup = update.StepSetup(
      model_cfg=model_cfg,
      loss_cfg=loss_cfg,
      optimizer=optimizer,
      schedule=schedule,
      num_microbatches=num_microbatches,
      batch_sh=NamedSharding(mesh, P(mesh_lib.BATCH_AXES)),
      grad_sh=self.param_shardings,
    )
    self._options = compiler_options
    self._built: dict[str, JitStep] = {}

  @property
  def optimizer(self) -> optax.GradientTransformation:
    return self._setup.optimizer

  def update(self, name: str) -> JitStep:
    """The update step of algorithm `name`: RL (state, ref, Experience, Coefficients) or SFT
    (state, Experience) -> (state, metrics). The state is donated."""
    if name not in self._built:
      self._built[name] = self._build(algorithms.get(name))
    return self._built[name]

  @property
  def logprob(self) -> JitStep:
    """(params, ref_params, Experience) -> {'logp', 'ref_logp'} [b, t], at the loss temperature."""
    if "_logprob" not in self._built:
      s, p_sh = self._setup, self.param_shardings
      fn = functools.partial(update.logprob_scores, s)
      self._built["_logprob"] = JitStep(
        fn, s, self.mesh, (p_sh, p_sh), s.batch_sh, accepts=(SCORE_FIELDS,), options=self._options
      )
    return self._built["_logprob"]

  def _build(self, algorithm: algorithms.Algorithm) -> JitStep:
    k = algorithm.num_attempts(self._setup.loss_cfg.num_attempts)
    setup = dataclasses.replace(
      self._setup, loss_cfg=dataclasses.replace(self._setup.loss_cfg, num_attempts=k)
    )
    repl = NamedSharding(self.mesh, P())
    state_sh, out = self.state_shardings, (self.state_shardings, repl)
    if algorithm.objective == "sft":  # SFT rows' targets are not bounded by one rollout's attempts
      setup = dataclasses.replace(
        setup, loss_cfg=dataclasses.replace(setup.loss_cfg, max_new_tokens=None)
      )
      fn = functools.partial(update.sft_update, setup)
      return JitStep(
        fn,
        setup,
        self.mesh,
        (state_sh,),
        out,
        accepts=(SFT_FIELDS, PACKED_SFT_FIELDS),
        donate=(0,),
        options=self._options,
      )
    fn = functools.partial(update.policy_update, setup, algorithm)
    return JitStep(
      fn,
      setup,
      self.mesh,
      (state_sh, self.param_shardings),
      out,
      accepts=(POLICY_FIELDS,),
      takes_coefficients=True,
      donate=(0,),
      options=self._options,
    )
