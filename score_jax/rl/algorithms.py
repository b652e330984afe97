"""The algorithm table: every training objective is one row, every method a tuple of phases.

An `Algorithm` names its objective ('policy': REINFORCE with per-token advantages and KL
weights; 'sft': masked next-token NLL), its per-token weight builder, and the data it trains on
(all K attempts or attempt 1 only; whether Stage II's offline first attempts apply). A `Method`
(what `config.rl.method` selects) is the sequence of phases a run trains, each an algorithm
with its update budget. Adding an ablation is one row here plus a config value; the steps are
built per algorithm on demand (`steps.Steps.update(name)`).

The coefficients alpha, beta1 and beta2 are traced scalars (`Coefficients`): changing them
(the adaptive Stage I controller does every step) never recompiles a step.

Shape letters: b episodes, t stream slots, a attempts.
"""

import dataclasses
from collections.abc import Callable

import jax
import numpy as np
from flax import struct

from score_jax.rl import losses


@struct.dataclass
class Coefficients:
  """The objective's scalar weights, passed to the steps as (replicated) arrays."""

  alpha: jax.Array  # Stage II bonus on r_a - r_{a-1}
  beta1: jax.Array  # KL weight of the rewarded attempts
  beta2: jax.Array  # Stage I KL weight pinning the earlier attempts to the reference

  @classmethod
  def of(cls, alpha: float = 0.0, beta1: float = 0.0, beta2: float = 0.0) -> "Coefficients":
    for name, v in (("alpha", alpha), ("beta1", beta1), ("beta2", beta2)):
      if not np.isfinite(v) or v < 0:
        raise ValueError(f"Coefficients.{name} must be a finite number >= 0, got {v!r}")
    return cls(*(np.float32(v) for v in (alpha, beta1, beta2)))


# (turn_bt, rewards_ba, g, coefficients, baseline) -> (advantage_bt, kl_weight_bt)
WeightBuilder = Callable[..., tuple[jax.Array, jax.Array]]


@dataclasses.dataclass(frozen=True)
class Collection:
  """How an SFT baseline builds its training set from sampled two-attempt episodes.

  source: 'policy' samples from the current model at the start of every round (STaR, ReST-EM
    style); 'base' samples from the frozen base model once (Pair-SFT).
  keep: 'star' keeps whole episodes that end correct (attempt 2 is the target): incorrect ->
    correct (D), and with `plus` also correct -> correct (D+). 'pair' pairs an incorrect base
    first attempt with a random correct response to the same problem (D), and with `plus` also
    a correct first attempt with a random correct response (D+).
  rounds: 'star' (config.sft.star_iterations rounds) or 'one'.
  """

  source: str
  keep: str
  plus: bool
  rounds: str

  def __post_init__(self):
    if self.source not in ("policy", "base") or self.keep not in ("star", "pair"):
      raise ValueError(f"Collection: bad source/keep {self.source!r}/{self.keep!r}")
    if self.rounds not in ("star", "one"):
      raise ValueError(f"Collection: rounds must be 'star' or 'one', got {self.rounds!r}")


@dataclasses.dataclass(frozen=True)
class Algorithm:
  """One training objective and the data it takes."""

  name: str
  summary: str
  objective: str  # 'policy' | 'sft'
  weights: WeightBuilder | None = None  # policy objectives only
  attempts: str = "all"  # 'all': K attempts per episode; 'first': attempt 1 only
  offline_first_attempts: bool = False  # may continue the base model's first attempts
  adapts_beta2: bool = False  # the adaptive beta2 controller runs after its steps
  collection: Collection | None = None  # SFT baselines: the data set their rounds collect

  def __post_init__(self):
    if self.objective not in ("policy", "sft"):
      raise ValueError(f"Algorithm {self.name!r}: objective must be 'policy' or 'sft'")
    if (self.objective == "policy") != (self.weights is not None):
      raise ValueError(f"Algorithm {self.name!r}: a policy objective needs a weight builder")
    if self.collection is not None and self.objective != "sft":
      raise ValueError(f"Algorithm {self.name!r}: only SFT objectives collect a data set")
    if self.attempts not in ("all", "first"):
      raise ValueError(f"Algorithm {self.name!r}: attempts must be 'all' or 'first'")

  def num_attempts(self, k: int) -> int:
    """Attempts per training episode when the run's episodes have k."""
    return 1 if self.attempts == "first" else k


def _stage1(turn_bt, rewards_ba, g, c: Coefficients, baseline):
  return losses.stage1_weights(turn_bt, rewards_ba, g, c.beta1, c.beta2, baseline)


def _stage2(turn_bt, rewards_ba, g, c: Coefficients, baseline):
  return losses.stage2_weights(turn_bt, rewards_ba, g, c.alpha, c.beta1, baseline)


def _naive_multiturn(turn_bt, rewards_ba, g, c: Coefficients, baseline):
  return losses.naive_multiturn_weights(turn_bt, rewards_ba, g, c.beta1, baseline)


def _multiturn_eq1(turn_bt, rewards_ba, g, c: Coefficients, baseline):
  # Eq. 1 read literally: every attempt rewarded by its own correctness, no bonus (alpha = 0).
  return losses.stage2_weights(turn_bt, rewards_ba, g, 0.0, c.beta1, baseline)


def _single_turn(turn_bt, rewards_ba, g, c: Coefficients, baseline):
  return losses.single_turn_weights(turn_bt, rewards_ba, g, c.beta1, baseline)


ALGORITHMS: dict[str, Algorithm] = {}


def register(algorithm: Algorithm) -> Algorithm:
  if algorithm.name in ALGORITHMS:
    raise ValueError(f"algorithm {algorithm.name!r} is already registered")
  ALGORITHMS[algorithm.name] = algorithm
  return algorithm


def get(name: str) -> Algorithm:
  if name not in ALGORITHMS:
    raise ValueError(f"unknown algorithm {name!r}; registered: {', '.join(sorted(ALGORITHMS))}")
  return ALGORITHMS[name]


register(
  Algorithm(
    "stage1",
    "SCoRe Stage I (paper Eq. 3): reward the last attempt, pin the earlier ones (beta2)",
    "policy",
    _stage1,
    adapts_beta2=True,
  )
)
register(
  Algorithm(
    "stage2",
    "SCoRe Stage II (paper Eq. 4): every attempt rewarded, later ones + alpha*(r_a - r_a-1)",
    "policy",
    _stage2,
    offline_first_attempts=True,
  )
)
register(
  Algorithm(
    "naive_multiturn",
    "naive multi-turn RL: reward on the last attempt only, KL beta1 on all",
    "policy",
    _naive_multiturn,
  )
)
register(
  Algorithm(
    "single_turn",
    "w/o multi-turn training (paper Table 4): RL on attempt 1 alone",
    "policy",
    _single_turn,
    attempts="first",
  )
)
register(
  Algorithm(
    "multiturn_eq1",
    "multi-turn RL on Eq. 1: every attempt rewarded by its own correctness, no bonus",
    "policy",
    _multiturn_eq1,
  )
)
register(Algorithm("sft", "masked next-token NLL on given streams (pretraining)", "sft"))
for _name, _summary, _collection in (
  ("star", "STaR D: SFT on own incorrect->correct traces", Collection("policy", "star", False, "star")),
  ("star_plus", "STaR D+: ... and correct->correct", Collection("policy", "star", True, "star")),
  ("pair_sft", "Pair-SFT D: base incorrect + a correct response", Collection("base", "pair", False, "one")),
  ("pair_sft_plus", "Pair-SFT D+: ... and correct + correct", Collection("base", "pair", True, "one")),
):  # fmt: skip
  register(Algorithm(_name, _summary, "sft", collection=_collection))


@dataclasses.dataclass(frozen=True)
class Method:
  """What config.rl.method selects: phases of (algorithm, config sections whose steps it gets).

  A one-phase baseline gets the sum of the stage budgets: the same number of updates as SCoRe.
  A method with no phases trains nothing (the base model, prompting-only Self-Refine).
  `instruction` is the second-turn prompt it is evaluated with (tasks.Task.instruction).
  """

  name: str
  phases: tuple[tuple[str, tuple[str, ...]], ...]
  title: str  # for progress lines and reports
  instruction: str = "correction"  # 'correction' | 'self_refine'

  def final_algorithm(self) -> Algorithm | None:
    """The algorithm of the last phase (whose checkpoints the 'best' selection ranks)."""
    return get(self.phases[-1][0]) if self.phases else None


BOTH = ("stage1", "stage2")  # a one-phase method's budget: both stages' steps

METHODS = {
  m.name: m
  for m in (
    Method("score", (("stage1", ("stage1",)), ("stage2", ("stage2",))), "SCoRe"),
    Method("naive_multiturn", (("naive_multiturn", BOTH),), "naive multi-turn RL (reward t2)"),
    Method("naive_multiturn_eq1", (("multiturn_eq1", BOTH),), "naive multi-turn RL (Eq. 1)"),
    Method("single_turn", (("single_turn", BOTH),), "w/o multi-turn training"),
    Method("no_stage1", (("stage2", BOTH),), "w/o Stage I"),
    Method("no_shaping", (("stage1", ("stage1",)), ("multiturn_eq1", ("stage2",))), "w/o reward shaping"),
    Method("star_stage2", (("stage1", ("stage1",)), ("star_plus", ("stage2",))), "w/ STaR instead of REINFORCE Stage II"),
    Method("star", (("star", BOTH),), "STaR D"),
    Method("star_plus", (("star_plus", BOTH),), "STaR D+"),
    Method("pair_sft", (("pair_sft", BOTH),), "Pair-SFT D"),
    Method("pair_sft_plus", (("pair_sft_plus", BOTH),), "Pair-SFT D+"),
    Method("self_refine", (), "Self-Refine", instruction="self_refine"),
    Method("base", (), "Base model"),
  )
}  # fmt: skip


def method(name: str) -> Method:
  if name not in METHODS:
    raise ValueError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}")
  return METHODS[name]
