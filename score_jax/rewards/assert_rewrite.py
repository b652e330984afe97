"""Trusted test code, compiled with its asserts rewritten for the code sandbox.

`assert e` becomes `_sbx_assert(e', line)`, and comparisons, `not`, `and` and `or` inside `e`
become `_sbx_compare` / `_sbx_truth` calls: helpers the sandbox harness (`sandbox_harness`) puts in
the tests' namespace, which compare builtin values type-strictly, so an object whose `__eq__`
always returns True cannot satisfy `assert f(x) == 3`.
"""

import ast


class _AssertRewriter(ast.NodeTransformer):
  """`assert e` -> `_sbx_assert(e', line)`; comparisons/not/and/or in e become strict calls."""

  def visit_Assert(self, node: ast.Assert) -> ast.AST:
    call = ast.Call(_name("_sbx_assert"), [self._test(node.test), ast.Constant(node.lineno)], [])
    return ast.copy_location(ast.Expr(call), node)

  def _test(self, e: ast.expr) -> ast.expr:
    if isinstance(e, ast.Compare):
      ops = ast.Tuple([ast.Constant(type(op).__name__) for op in e.ops], ast.Load())
      operands = ast.List([e.left, *e.comparators], ast.Load())
      return ast.Call(_name("_sbx_compare"), [operands, ops], [])
    if isinstance(e, ast.UnaryOp) and isinstance(e.op, ast.Not):
      return ast.UnaryOp(ast.Not(), ast.Call(_name("_sbx_truth"), [self._test(e.operand)], []))
    if isinstance(e, ast.BoolOp):
      values = [ast.Call(_name("_sbx_truth"), [self._test(v)], []) for v in e.values]
      return ast.BoolOp(e.op, values)
    return e


def _name(name: str) -> ast.Name:
  return ast.Name(name, ast.Load())


def rewrite_tests(source: str, field: str = "tests"):
  """Parses trusted test code, rewrites its asserts, and compiles it.

  Raises:
    ValueError: naming `field` and the line when the code does not parse.
  """
  try:
    tree = ast.parse(source, filename=f"<{field}>")
  except SyntaxError as e:
    raise ValueError(f"{field}: line {e.lineno}: {e.msg}: {(e.text or '').strip()!r}") from None
  tree = ast.fix_missing_locations(_AssertRewriter().visit(tree))
  return compile(tree, f"<{field}>", "exec")
