"""The verdict every verifier returns: a binary reward plus an outcome code.

An outcome is counted separately from the reward so that a checker crash or a timeout is never
mistaken for a plain wrong answer.
"""

import dataclasses
import enum


class Outcome(enum.IntEnum):
  """Why an attempt got its reward. Stable integer codes: they are stored in metrics arrays."""

  CORRECT = 0  # answer equivalent / all tests passed
  WRONG = 1  # answer not equivalent / a test failed / no answer found
  TIMEOUT = 2  # the check ran past its time limit
  ERROR = 3  # the checker itself failed (never silently a 0: counted and logged)


@dataclasses.dataclass(frozen=True)
class Verdict:
  """One attempt's verdict.

  Attributes:
    outcome: why the attempt got its reward.
    reward: 1.0 for CORRECT, else 0.0 (SCoRe uses binary rewards only).
    detail: short human-readable explanation (captured output, the extracted answer, ...).
  """

  outcome: Outcome
  detail: str = ""

  @property
  def reward(self) -> float:
    return 1.0 if self.outcome == Outcome.CORRECT else 0.0
