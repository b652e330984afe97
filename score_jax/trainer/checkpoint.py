"""Orbax checkpoints that resume exactly: keep-N latest plus best-by-training-reward, preemption.

A checkpoint step holds three named items:
- `state`: the pytree of jax arrays (params, optimizer state, step, RNG key *data*), restored
  directly into the target shardings given by an abstract state of `jax.ShapeDtypeStruct`s;
- `meta`: JSON (stage name, stage step, data-iterator states, adaptive beta2, best metric, ...);
- `config`: JSON, the resolved experiment config.

Retention is ONE orbax preservation policy, `AnyPreservationPolicy([LatestN(keep),
BestN(best_metric, n=keep_best)])`: a step survives if it is among the `keep` newest OR the
`keep_best` highest by `best_metric` (the paper selects checkpoints by highest training reward),
so keep-N can never delete the best checkpoint. A separate 'best' manager was rejected: it would
write every best state twice and its two directories could disagree after a crash.

Atomicity: orbax writes a step into `<step>.orbax-checkpoint-tmp-*` and renames it when complete
(or writes `commit_success.txt` on object stores); tmp dirs are invisible to restore and removed
on open. On top of that, a step dir lacking orbax's step metadata or an item directory (e.g.
copied half-way by hand) is treated as incomplete: it is skipped and renamed aside on open.

Orbax logs ~30 INFO lines per save (and a WARNING for every save without metrics, e.g. a
preemption save): opening a Checkpointer keeps orbax's records below ERROR off the terminal,
so they reach the run's log file only (`score_jax.trainer.console`). This module's own
warnings (an incomplete checkpoint moved aside, a SIGTERM) stay on the terminal.
"""

import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers as ocm

from score_jax import storage
from score_jax.trainer import console

PyTree = Any
ITEMS = ("state", "meta", "config")
# Written by orbax in every finalized step dir (step metadata: time, metrics).
_STEP_METADATA_FILE = "_CHECKPOINT_METADATA"
_MAX_LISTED = 20


class CheckpointMismatchError(ValueError):
  """A stored checkpoint does not match the abstract state it is restored into."""


def _key_str(path: tuple[Any, ...]) -> str:
  """'opt/0/mu/w' for both live pytrees (attrs, namedtuples) and orbax metadata (dicts)."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def _flat(tree: PyTree) -> dict[str, Any]:
  return {_key_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def check_state_matches(found_tree: PyTree, abstract_state: PyTree, source: str) -> None:
  """Raises ONE CheckpointMismatchError listing every missing/unexpected/mis-shaped key."""
  found, expected = _flat(found_tree), _flat(abstract_state)
  problems = []
  missing = sorted(set(expected) - set(found))
  unexpected = sorted(set(found) - set(expected))
  if missing:
    problems.append(f"missing keys: {', '.join(missing[:_MAX_LISTED])}")
  if unexpected:
    problems.append(f"unexpected keys: {', '.join(unexpected[:_MAX_LISTED])}")
  for key in sorted(set(found) & set(expected)):
    e, f = expected[key], found[key]
    e_sd, f_sd = (tuple(e.shape), np.dtype(e.dtype)), (tuple(f.shape), np.dtype(f.dtype))
    if e_sd != f_sd:
      problems.append(
        f"{key}: expected shape {e_sd[0]} dtype {e_sd[1]}, found shape {f_sd[0]} dtype {f_sd[1]}"
      )
  if problems:
    shown = problems[:_MAX_LISTED] + (
      [f"... and {len(problems) - _MAX_LISTED} more"] if len(problems) > _MAX_LISTED else []
    )
    raise CheckpointMismatchError(
      f"checkpoint {source} does not match the abstract state:\n  " + "\n  ".join(shown)
    )


def _as_abstract(abstract_state: PyTree) -> PyTree:
  def leaf(path, x):
    if not isinstance(x, jax.ShapeDtypeStruct | jax.Array) or x.sharding is None:
      raise ValueError(
        f"abstract state leaf {_key_str(path)} must be a jax.ShapeDtypeStruct (or jax.Array) "
        f"with a .sharding so the restored array is born sharded; got {type(x).__name__}"
      )
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)

  return jax.tree_util.tree_map_with_path(leaf, abstract_state)


class Checkpointer:
  """Orbax CheckpointManager with items state/meta/config, keep-N + best, and validation."""

  def __init__(
    self,
    directory: str | os.PathLike,
    *,
    keep: int = 3,
    keep_best: int = 1,
    save_interval_steps: int = 1,
    async_save: bool = True,
    best_metric: str = "reward",
    config: Mapping[str, Any] | None = None,
  ):
    """Opens (creating if needed) a checkpoint directory.

    Args:
      directory: where step dirs live (absolute or relative; gs:// works through orbax).
      keep: how many of the newest checkpoints to keep.
      keep_best: how many of the highest-`best_metric` checkpoints to keep as well.
      save_interval_steps: `save` writes only on multiples of this unless `force=True`.
      async_save: write in a background thread; `wait()` blocks until written.
      best_metric: the key in `save(metrics=...)` ranked by highest value.
      config: the resolved config (JSON-serialisable), stored with every step.
    """
    if keep < 1 or keep_best < 0 or save_interval_steps < 1:
      raise ValueError(
        f"checkpoint options: need keep >= 1, keep_best >= 0, save_interval_steps >= 1; got "
        f"keep={keep}, keep_best={keep_best}, save_interval_steps={save_interval_steps}"
      )
    console.quiet_on_terminal("orbax")  # its INFO flood and bookkeeping warnings: log file only
    # A gs:// URL goes to Orbax untouched (its own epath + tensorstore GCS drivers).
    self.directory = epath.Path(storage.absolute(directory))
    self.best_metric = best_metric
    self._config = dict(config or {})
    if jax.process_index() == 0:
      self.directory.mkdir(parents=True, exist_ok=True)
      self._move_aside_incomplete()
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"score_jax.trainer.checkpoint.open:{self.directory}")
    policy = ocm.AnyPreservationPolicy(
      [
        ocm.LatestN(n=keep),
        # Checkpoints saved without metrics (e.g. a preemption save) fall under LatestN only.
        ocm.BestN(
          get_metric_fn=lambda m: float(m[best_metric]),
          n=keep_best,
          keep_checkpoints_without_metrics=False,
        ),
      ]
    )
    options = ocp.CheckpointManagerOptions(
      # best_fn is set only so orbax persists the metrics (a `metrics` item); retention is decided
      # by `policy` alone.
      best_fn=lambda m: float(m[best_metric]),
      best_mode="max",
      save_decision_policy=ocm.FixedIntervalPolicy(save_interval_steps),
      preservation_policy=policy,
      enable_async_checkpointing=async_save,
      cleanup_tmp_directories=True,
      create=True,
    )
    handlers = {
      "state": ocp.StandardCheckpointHandler(),
      # JsonCheckpointHandler writes on the primary host only; every host reads.
      "meta": ocp.JsonCheckpointHandler(),
      "config": ocp.JsonCheckpointHandler(),
    }
    self._mgr = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

  def _incomplete_reason(self, step_dir: epath.Path) -> str | None:
    if not (step_dir / _STEP_METADATA_FILE).exists():
      return f"no {_STEP_METADATA_FILE}"
    for item in ITEMS:
      if not (step_dir / item).is_dir():
        return f"no '{item}' item"
    if not (step_dir / "state" / "_METADATA").exists():
      return "no state/_METADATA"
    return None

  def _move_aside_incomplete(self) -> None:
    """Renames step dirs that look final but are incomplete, so a later save can reuse the step."""
    if not self.directory.exists():  # a bucket's "directory" exists once an object is under it
      return
    for d in self.directory.iterdir():
      if d.is_dir() and d.name.isdigit() and (reason := self._incomplete_reason(d)):
        dest = d.with_name(f"{d.name}.incomplete-{int(time.time())}")
        logging.warning("checkpoint %s is incomplete (%s): moved to %s", d, reason, dest.name)
        d.rename(dest)

  def all_steps(self) -> list[int]:
    """Complete checkpoint steps, ascending."""
    return [
      s
      for s in sorted(self._mgr.all_steps())
      if self._incomplete_reason(self.directory / str(s)) is None
    ]

  def latest_step(self) -> int | None:
    """The newest complete step, or None."""
    steps = self.all_steps()
    return steps[-1] if steps else None

  def metrics(self, step: int) -> dict[str, float] | None:
    """The metrics a step was saved with (None when saved without)."""
    return self._mgr.metrics(step) or None

  def best_step(self) -> int | None:
    """The retained step with the highest `best_metric`, or None if none has metrics."""
    scored = [(m[self.best_metric], s) for s in self.all_steps() if (m := self.metrics(s))]
    return max(scored)[1] if scored else None

  def save(
    self,
    step: int,
    state: PyTree,
    meta: Mapping[str, Any],
    metrics: Mapping[str, float] | None = None,
    force: bool = False,
  ) -> bool:
    """Saves (asynchronously by default); returns whether a checkpoint was started.

    Skipped when `step` is not a multiple of save_interval_steps (unless `force`) or when `step`
    is already saved (a preemption save right after a periodic one is a no-op, not an error).
    """
    for key, leaf in _flat(state).items():
      if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
        raise ValueError(f"state leaf {key} is a typed PRNG key: store jax.random.key_data(key)")
    if metrics is not None:
      if self.best_metric not in metrics:
        raise ValueError(
          f"save(step={step}) metrics lack the best metric '{self.best_metric}': "
          f"got keys {sorted(metrics)}"
        )
      metrics = {k: float(v) for k, v in metrics.items()}
    latest = self._mgr.latest_step()
    if latest is not None and step <= latest:
      if step == latest:
        return False
      raise ValueError(f"save(step={step}) is older than the latest checkpoint step {latest}")
    args = ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      meta=ocp.args.JsonSave(dict(meta)),
      config=ocp.args.JsonSave(self._config),
    )
    return self._mgr.save(step, args=args, metrics=metrics, force=force)

  def restore(self, step: int, abstract_state: PyTree) -> tuple[PyTree, dict[str, Any]]:
    """Restores (state, meta) of `step`, arrays born with the abstract state's shardings.

    The stored tree, shapes and dtypes are checked against `abstract_state` from the small
    metadata file first, so a mismatch fails before any array is read.
    """
    reason = self._incomplete_reason(self.directory / str(step))
    if step not in self._mgr.all_steps() or reason:
      raise FileNotFoundError(
        f"no complete checkpoint for step {step} in {self.directory} "
        f"({reason or 'absent'}); complete steps: {self.all_steps()}"
      )
    abstract = _as_abstract(abstract_state)
    stored = self._mgr.item_metadata(step)["state"]
    check_state_matches(getattr(stored, "tree", stored), abstract, f"{self.directory}/{step}")
    out = self._mgr.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
      ),
    )
    return out["state"], dict(out["meta"])

  def restore_config(self, step: int) -> dict[str, Any]:
    """The config stored with `step`."""
    out = self._mgr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return dict(out["config"])

  def restore_latest(self, abstract_state: PyTree) -> tuple[PyTree, dict[str, Any]] | None:
    """(state, meta) of the newest complete step, or None when there is none."""
    step = self.latest_step()
    return None if step is None else self.restore(step, abstract_state)

  def wait(self) -> None:
    """Blocks until pending async saves are on disk."""
    self._mgr.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases orbax's threads."""
    self._mgr.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc: object) -> None:
    self.close()


def install_sigterm_handler(callback: Callable[[int], None]) -> Any:
  """Calls `callback(signum)` on SIGTERM; returns the previous handler.

  Must run on the main thread (Python delivers signals there). The callback should only set
  flags: the loop saves at its next step boundary, never inside the handler.
  """
  return signal.signal(signal.SIGTERM, lambda signum, frame: callback(signum))


class PreemptionGuard:
  """SIGTERM (preemption notice) sets `.requested`; the loop then saves and exits cleanly.

  Usage: `guard = PreemptionGuard()`, and each step `if guard.should_stop(): save; break`.
  The handler only records the signal: saving inside a handler could interrupt a running save.
  """

  def __init__(self):
    self.requested = False
    self.signum: int | None = None
    self._previous = install_sigterm_handler(self._on_signal)

  def _on_signal(self, signum: int) -> None:
    self.requested, self.signum = True, signum
    logging.warning("received signal %d: will save a checkpoint and stop", signum)

  def should_stop(self) -> bool:
    """Whether ANY process got the notice (all hosts must save the same step together)."""
    if jax.process_count() == 1:
      return self.requested
    flags = multihost_utils.process_allgather(np.int32(self.requested))
    return bool(np.any(flags))

  def uninstall(self) -> None:
    """Restores the handler that was installed before this guard."""
    signal.signal(signal.SIGTERM, self._previous)
