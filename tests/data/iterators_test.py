"""Tests for DataIterator: determinism, resume equality, epochs, multi-host slicing, bad state."""

import json

import pytest

from score_jax.data.iterators import DataIterator

EXAMPLES = list(range(23))  # any sequence works; ints make batches easy to compare


def _take(it, n):
  return [next(it) for _ in range(n)]


@pytest.mark.parametrize("drop_remainder", [True, False])
@pytest.mark.parametrize("stop_after", [1, 4, 5, 6, 13])  # mid-epoch, at and across boundaries
def test_resume_gives_identical_batches(drop_remainder, stop_after):
  reference = DataIterator(EXAMPLES, 4, seed=7, drop_remainder=drop_remainder)
  expected = _take(reference, stop_after + 9)
  first = DataIterator(EXAMPLES, 4, seed=7, drop_remainder=drop_remainder)
  assert _take(first, stop_after) == expected[:stop_after]
  saved = json.loads(json.dumps(first.state()))  # as a checkpoint would store it
  resumed = DataIterator.from_state(EXAMPLES, saved)
  assert _take(resumed, 9) == expected[stop_after:]
  other = DataIterator(EXAMPLES, 4, seed=7, drop_remainder=drop_remainder)
  other.restore(saved)
  assert _take(other, 9) == expected[stop_after:]


def test_epochs_are_fresh_permutations():
  it = DataIterator(EXAMPLES, 5, seed=1)
  assert it.batches_per_epoch == 4
  epochs = [sum(_take(it, 4), []) for _ in range(3)]
  assert all(len(set(e)) == 20 for e in epochs)  # no repeats within an epoch; 3 dropped
  assert epochs[0] != epochs[1] != epochs[2]
  assert it.state()["epoch"] == 2 and it.state()["position"] == 20
  again = DataIterator(EXAMPLES, 5, seed=1)
  assert sum(_take(again, 4), []) == epochs[0]
  assert sum(_take(DataIterator(EXAMPLES, 5, seed=2), 4), []) != epochs[0]


def test_no_shuffle_and_remainder():
  it = DataIterator(EXAMPLES, 10, seed=0, shuffle=False, drop_remainder=False, num_epochs=2)
  batches = list(it)
  assert batches[:3] == [list(range(10)), list(range(10, 20)), [20, 21, 22]]
  assert batches[3:] == batches[:3] and len(batches) == 6


@pytest.mark.parametrize("process_count", [2, 4])
def test_processes_split_each_global_batch(process_count):
  whole = _take(DataIterator(EXAMPLES, 8, seed=3), 6)
  parts = [
    _take(DataIterator(EXAMPLES, 8, seed=3, process_index=p, process_count=process_count), 6)
    for p in range(process_count)
  ]
  for step in range(6):
    assert sum((part[step] for part in parts), []) == whole[step]


def test_state_is_global_so_host_count_can_change():
  single = DataIterator(EXAMPLES, 4, seed=5)
  _take(single, 3)
  state = single.state()
  expected = _take(single, 2)
  halves = [
    DataIterator.from_state(EXAMPLES, state, process_index=p, process_count=2) for p in (0, 1)
  ]
  for step in range(2):
    assert halves[0].__next__() + halves[1].__next__() == expected[step]


def test_uneven_last_batch_across_processes():
  kw = dict(shuffle=False, drop_remainder=False, num_epochs=1, process_count=2)
  p0 = list(DataIterator(EXAMPLES, 10, seed=0, process_index=0, **kw))
  p1 = list(DataIterator(EXAMPLES, 10, seed=0, process_index=1, **kw))
  assert p0[-1] == [20, 21] and p1[-1] == [22]


@pytest.mark.parametrize(
  "change, message",
  [
    ({"seed": 8}, r"state has seed=8 but this iterator has seed=7"),
    ({"num_examples": 24}, r"state has num_examples=24 .* num_examples=23"),
    ({"position": 99}, r"position must be an int in \[0, 23\], got 99"),
    ({"epoch": -1}, r"epoch must be an int >= 0, got -1"),
  ],
)
def test_restore_rejects_foreign_state(change, message):
  it = DataIterator(EXAMPLES, 4, seed=7)
  with pytest.raises(ValueError, match=message):
    it.restore({**it.state(), **change})
  with pytest.raises(ValueError, match=r"state lacks keys \['position'\]"):
    it.restore({k: v for k, v in it.state().items() if k != "position"})


@pytest.mark.parametrize(
  "kwargs, message",
  [
    (dict(batch_size=0), r"batch_size must be positive"),
    (dict(batch_size=6, process_count=4), r"batch_size 6 is not divisible by process_count 4"),
    (dict(batch_size=4, process_index=2, process_count=2), r"process_index 2 not in \[0, 2\)"),
    (dict(batch_size=24), r"23 examples cannot fill one batch of 24"),
    (dict(batch_size=4, seed=-1), r"seed must be a non-negative int"),
  ],
)
def test_bad_arguments(kwargs, message):
  kwargs = {"seed": 0, **kwargs}
  with pytest.raises(ValueError, match=message):
    DataIterator(EXAMPLES, **kwargs)
