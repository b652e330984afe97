"""Tests for the mesh, the logical rules table and sharded execution on 8 simulated devices."""

import functools

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from score_jax.models import decoder, presets
from score_jax.models import sharding as model_sharding
from score_jax.parallel import mesh as mesh_lib
from tests import numerics

pytestmark = pytest.mark.numerics


def test_make_mesh_shapes_and_wildcard():
  mesh = mesh_lib.make_mesh({"fsdp": -1, "tensor": 2})
  assert dict(mesh.shape) == {"data": 1, "fsdp": 4, "tensor": 2}
  assert mesh.axis_names == mesh_lib.MESH_AXES
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
  assert dict(mesh_lib.make_mesh((2, 2, 2)).shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  assert mesh_lib.make_mesh((1, 1, 2)).devices.size == 2  # divides 8: uses the first 2 devices


@pytest.mark.parametrize(
  "shape,match",
  [
    ((1, 3, 1), "needs 3 devices, which does not divide the 8"),
    ((3, -1, 1), "3 does not divide 8 devices"),
    ((1, -1, -1), "at most one -1"),
    ((1, 0, 1), "must be positive"),
    ((1, 8), "must have 3 sizes"),
    ({"model": 2}, r"unknown axes \['model'\]"),
  ],
)
def test_make_mesh_errors(shape, match):
  with pytest.raises(ValueError, match=match):
    mesh_lib.make_mesh(shape)


def test_logical_specs_fall_back_to_replicated_when_not_divisible():
  mesh = mesh_lib.make_mesh((1, 2, 4))
  to_mesh = functools.partial(mesh_lib.logical_to_mesh_spec, mesh=mesh)
  # MQA: a single kv head cannot be split over tensor=4.
  assert to_mesh(P("layers", "embed", "kv_heads", "head_dim"), (2, 64, 1, 16)) == P(
    None, "fsdp", None, None
  )
  assert to_mesh(P("layers", "embed", "kv_heads", "head_dim"), (2, 64, 4, 16)) == P(
    None, "fsdp", "tensor", None
  )
  # batch -> (data, fsdp); the size-1 data axis is dropped from the spec.
  assert to_mesh(P("batch", None), (6, 3)) == P("fsdp", None)
  assert to_mesh(P("batch", None), (5, 3)) == P(None, None)
  assert to_mesh(P("vocab", "mlp"), (8, 8)) == P("tensor", None)  # an axis is used only once
  with pytest.raises(ValueError, match="'heads' has no rule"):
    to_mesh(P("heads"), (4,))


@functools.cache
def _setup(name):
  """Params born sharded on a 2x4 mesh, their host copy, a left-padded batch, reference logits."""
  cfg = presets.get_preset(name)
  born = model_sharding.init_params_sharded(cfg, jax.random.key(0), mesh_lib.make_mesh((1, 2, 4)))
  params = jax.device_get(born)
  rng = np.random.RandomState(0)
  tokens = rng.randint(0, cfg.vocab_size, (8, 20)).astype(np.int32)
  mask = np.ones(tokens.shape, bool)
  mask[::2, :5] = False  # left padding on every other row
  with jax.default_device(jax.devices()[0]):  # the single-device reference
    ref, _ = jax.jit(functools.partial(decoder.forward, cfg))(params, tokens, mask_bt=mask)
  return cfg, born, params, tokens, mask, np.asarray(ref)


def test_param_shardings_follow_the_rules_table():
  cfg = presets.get_preset("tiny-qwen2")  # has biases and 2 kv heads
  specs = jax.tree.map(
    lambda s: s.spec, model_sharding.param_shardings(cfg, mesh_lib.make_mesh((1, 2, 4)))
  )
  assert specs["embedder"]["input_embedding"] == P("tensor", "fsdp")
  attn = specs["layers"]["attn"]
  assert attn["q_proj"]["kernel"] == P(None, "fsdp", "tensor", None)
  assert attn["q_proj"]["bias"] == P(None, "tensor", None)
  assert attn["k_proj"]["kernel"] == P(None, "fsdp", None, None)  # 2 kv heads over tensor=4
  assert attn["o_proj"]["kernel"] == P(None, "tensor", None, "fsdp")
  assert specs["layers"]["mlp"]["down_proj"]["kernel"] == P(None, "tensor", "fsdp")
  assert specs["layers"]["pre_ffw_norm"]["scale"] == P(None, None)
  assert specs["final_norm"]["scale"] == P(None)
  untied = presets.get_preset("tiny-mistral")
  head = model_sharding.param_shardings(untied, mesh_lib.make_mesh((1, 4, 2)))["lm_head"]["kernel"]
  assert head.spec == P("fsdp", "tensor")


@pytest.mark.parametrize(
  "name,fsdp,tensor",
  [("tiny-gemma3", 2, 4), ("tiny-gemma3", 4, 2), ("tiny-gemma3", 8, 1), ("tiny-qwen2", 2, 4)],
)
def test_sharded_forward_matches_single_device(name, fsdp, tensor):
  cfg, _, params, tokens, mask, ref = _setup(name)
  mesh = mesh_lib.make_mesh((1, fsdp, tensor))
  shardings = model_sharding.param_shardings(cfg, mesh)
  leaves = jax.tree.leaves(shardings)
  assert len(leaves) == len(jax.tree.leaves(params))
  assert all(isinstance(s, NamedSharding) for s in leaves)
  sharded = jax.device_put(params, shardings)
  batch = NamedSharding(mesh, P(("data", "fsdp")))
  with mesh_lib.use_rules(mesh):
    fwd = jax.jit(
      lambda p, t, m: decoder.forward(cfg, p, t, mask_bt=m), in_shardings=(shardings, batch, batch)
    )
    out, _ = fwd(sharded, tokens, mask)
  # Tensor parallelism splits the contractions into partial sums: another summation order.
  bound = numerics.logit_bound(cfg, tokens.shape[1], np.abs(ref[mask]).max())
  numerics.assert_close(out, ref, bound, where=mask, what=f"{name} on fsdp={fsdp} tensor={tensor}")


def test_params_born_sharded_and_cached_decode_on_mesh():
  cfg, born, params, tokens, mask, ref = _setup("tiny-gemma3")
  mesh = mesh_lib.make_mesh((1, 2, 4))
  gate = born["layers"]["mlp"]["gate_proj"]["kernel"]  # [l, d, f] = [4, 64, 128]
  assert gate.sharding.spec == P(None, "fsdp", "tensor")
  assert {s.data.shape for s in gate.addressable_shards} == {(4, 32, 32)}
  assert float(np.abs(params["layers"]["mlp"]["gate_proj"]["kernel"]).std()) > 0.05
  with mesh_lib.use_rules(mesh):
    fwd = jax.jit(functools.partial(decoder.forward, cfg))
    cache = decoder.init_cache(cfg, 8, 24)
    a, cache = fwd(born, tokens[:, :10], mask_bt=mask[:, :10], cache=cache)  # same shapes twice:
    b, cache = fwd(born, tokens[:, 10:], mask_bt=mask[:, 10:], cache=cache)  # one compilation
  got = np.concatenate([a, b], axis=1)
  bound = numerics.logit_bound(cfg, 24, np.abs(ref[mask]).max())
  numerics.assert_close(got, ref, bound, where=mask, what="cached decode on the mesh")
  assert int(cache["index"]) == 20
