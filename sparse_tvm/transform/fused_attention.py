"""``FuseAttention``: an encoder's scaled dot-product attention as one call of our own kernel.

An exported transformer spells attention as separate ops: the projections reshaped to heads and
transposed (``permute_dims``), ``matmul(Q, K^T)``, a multiply by the scale, an add of the mask,
a softmax over the keys, ``matmul(P, V)`` and the transpose back. Unfused, each is a kernel
that writes its result to memory for the next one (a third of a 90 %-sparse all-MiniLM-L6's
time). The pass finds, in ``main``::

    s = matmul(q, k)               q (B, H, S, D), k (B, H, D, T)
    s = multiply(s, c) | divide(s, c)   optional, c one float32 element
    s = add(s, mask)               optional, mask broadcasting to (B, H, S, T)
    p = softmax(s, axis=-1)
    o = matmul(p, v)               v (B, H, T, D)
    o = permute_dims(o, [0, 2, 1, 3])   optional: the output in token-major order

with every intermediate read by the next op only, and replaces ``o`` by a call of
:func:`~sparse_tvm.kernels.attention.attention_kernel`. Where ``q`` / ``v`` are
``permute_dims(x, [0, 2, 1, 3])`` and ``k`` is ``permute_dims(x, [0, 2, 3, 1])`` (or
``[0, 1, 3, 2]`` of a head-major tensor), the kernel reads ``x`` as it is: the transposes go. It
runs first in the CPU pipeline, before :class:`~sparse_tvm.transform.fast_math.FastMath` would
take the softmax, so every CPU build (dense or sparse) takes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from sparse_tvm.analysis.layers import FuncIndex, is_float32, op_name, static_shape
from sparse_tvm.kernels.attention import AttentionSpec, attention_kernel, default_attention_knobs
from sparse_tvm.target.machine import num_cores, vector_lanes
from sparse_tvm.transform.dense_to_sparse import rebind
from sparse_tvm.transform.lowering import add_kernel, tensor_type

__all__ = ["AttentionMatch", "FuseAttention", "find_attentions"]

# permute_dims axes -> the layout of the permuted tensor's source, for each operand
_Q_OR_V_SOURCE = {(0, 2, 1, 3): "BSHD"}
_K_SOURCE = {(0, 2, 3, 1): "BSHD", (0, 1, 3, 2): "BHSD"}


@dataclass
class AttentionMatch:
    """One attention found in ``main``: the expressions the kernel reads and its spec."""

    end: relax.Var  # the binding the kernel's call replaces
    q: relax.Expr
    k: relax.Expr
    v: relax.Expr
    mask: relax.Expr | None
    scale: relax.Expr | None
    scale_divides: bool
    spec: AttentionSpec


def _axes(call: relax.Call) -> tuple[int, ...] | None:
    axes = call.attrs.axes
    return None if axes is None else tuple(int(a) for a in axes)


def _source(index: FuncIndex, expr: relax.Expr, sources: dict, plain: str):
    """``(tensor to read, its layout)``: the input of a transpose in ``sources``, else ``expr``."""
    value = index.value.get(expr) if isinstance(expr, relax.Var) else None
    if op_name(value) == "relax.permute_dims" and (layout := sources.get(_axes(value))):
        return value.args[0], layout
    return expr, plain


def _one_element(expr: relax.Expr) -> bool:
    shape = static_shape(expr)
    return shape is not None and is_float32(expr) and all(s == 1 for s in shape)


def _scale_of(index: FuncIndex, var: relax.Var, source: relax.Var):
    """``(scale, divides)`` when ``var`` is ``source`` times / over one float32 element."""
    call = index.value[var]
    name = op_name(call)
    if name not in ("relax.multiply", "relax.divide"):
        return None
    a, b = call.args
    if name == "relax.multiply":
        other = b if a.same_as(source) else a
    elif name == "relax.divide" and a.same_as(source):
        other = b
    else:
        return None
    return (other, name == "relax.divide") if _one_element(other) else None


def _match(index: FuncIndex, var: relax.Var, lanes: int) -> AttentionMatch | None:
    """The attention whose scores matmul is bound to ``var``, if the whole chain is there."""
    scores = index.value[var]
    q, k = scores.args
    q_shape, k_shape = static_shape(q), static_shape(k)
    if q_shape is None or k_shape is None or len(q_shape) != 4 or len(k_shape) != 4:
        return None
    nb, nh, ns, nd = q_shape
    nt = k_shape[3]
    if k_shape != (nb, nh, nd, nt) or not (is_float32(q) and is_float32(k)):
        return None
    current, scale, divides, mask = var, None, False, None
    user = index.single_user(current)
    if user is not None and (found := _scale_of(index, user, current)) is not None:
        (scale, divides), current = found, user
        user = index.single_user(current)
    if user is not None and op_name(index.value[user]) == "relax.add":
        a, b = index.value[user].args
        mask = b if a.same_as(current) else a
        mask_shape = static_shape(mask)
        full = (nb, nh, ns, nt)
        if (
            mask_shape is None
            or not is_float32(mask)
            or len(mask_shape) > 4
            or any(m not in (1, f) for m, f in zip(mask_shape[::-1], full[::-1], strict=False))
            or static_shape(user) != full
        ):
            return None
        current = user
        user = index.single_user(current)
    if user is None or op_name(index.value[user]) != "relax.nn.softmax":
        return None
    if int(index.value[user].attrs.axis) not in (-1, 3):
        return None
    probs = user
    user = index.single_user(probs)
    if user is None or op_name(index.value[user]) != "relax.matmul":
        return None
    p, v = index.value[user].args
    if not p.same_as(probs) or static_shape(v) != (nb, nh, nt, nd) or not is_float32(v):
        return None
    end, out_layout = user, "BHSD"
    after = index.single_user(end)
    if (
        after is not None
        and op_name(index.value[after]) == "relax.permute_dims"
        and _axes(index.value[after]) == (0, 2, 1, 3)
    ):
        end, out_layout = after, "BSHD"
    q_src, q_layout = _source(index, q, _Q_OR_V_SOURCE, "BHSD")
    k_src, k_layout = _source(index, k, _K_SOURCE, "BHDS")
    v_src, v_layout = _source(index, v, _Q_OR_V_SOURCE, "BHSD")
    mask_shape = (1,) * 4
    if mask is not None:
        shape = static_shape(mask)
        mask_shape = (1,) * (4 - len(shape)) + shape
    spec = AttentionSpec(
        nb, nh, ns, nt, nd, q_layout, k_layout, v_layout, out_layout, mask_shape, lanes
    )
    return AttentionMatch(end, q_src, k_src, v_src, mask, scale, divides, spec)


def find_attentions(func: relax.Function, lanes: int = 16) -> list[AttentionMatch]:
    """Every attention chain (module doc) in ``func``'s dataflow blocks, in binding order."""
    index = FuncIndex(func)
    return [
        found
        for var, value in index.value.items()
        if op_name(value) == "relax.matmul" and (found := _match(index, var, lanes))
    ]


def _kernel_name(spec: AttentionSpec) -> str:
    s = spec
    return f"attention_{s.batch}x{s.heads}x{s.queries}x{s.keys}x{s.dim}_{s.q_layout}_{s.k_layout}_{s.v_layout}_{s.out_layout}"


def _reshaped(builder: relax.BlockBuilder, expr: relax.Expr, shape: tuple) -> relax.Expr:
    if static_shape(expr) == tuple(shape):
        return expr
    return builder.emit(relax.op.reshape(expr, shape))


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, matches: list[AttentionMatch], cores: int) -> None:
        super().__init__(mod)
        self.by_end = {m.end: m for m in matches}
        self.cores = cores
        self.kernels: dict[AttentionSpec, relax.GlobalVar] = {}

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        match = self.by_end.get(binding.var)
        if match is None:
            super().visit_var_binding_(binding)
            return
        spec = match.spec
        if spec not in self.kernels:
            kernel = attention_kernel(spec, default_attention_knobs(spec, self.cores))
            self.kernels[spec] = add_kernel(self.builder_, kernel, _kernel_name(spec))
        mask = _reshaped(
            self.builder_,
            relax.const(0.0, "float32") if match.mask is None else self.visit_expr(match.mask),
            spec.mask_shape,
        )
        if match.scale is None:
            scale = relax.const(1.0, "float32")
        else:
            scale = _reshaped(self.builder_, self.visit_expr(match.scale), ())
            if match.scale_divides:
                scale = self.builder_.emit(relax.op.divide(relax.const(1.0, "float32"), scale))
        call = relax.call_tir(
            self.kernels[spec],
            [self.visit_expr(match.q), self.visit_expr(match.k), self.visit_expr(match.v),
             mask, scale],
            tensor_type(spec.shape(spec.out_layout, spec.queries)),
        )  # fmt: skip
        rebind(self, binding.var, call)


@tvm.transform.module_pass(opt_level=0, name="FuseAttention")
class FuseAttention:
    """Rewrite ``main``'s attention chains (module doc) into calls of
    :func:`~sparse_tvm.kernels.attention.attention_kernel` for ``target``'s vector width and
    cores; a module without ``main`` or without such a chain is returned as it is."""

    def __init__(self, target: tvm.target.Target | None) -> None:
        self.lanes = vector_lanes(target)
        self.cores = num_cores(target)

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        names = {gv.name_hint for gv in mod.get_global_vars()}
        if "main" not in names or not isinstance(mod["main"], relax.Function):
            return mod
        matches = find_attentions(mod["main"], self.lanes)
        if not matches:
            return mod
        rewriter = _Rewriter(mod, matches, self.cores)
        new_main = rewriter.visit_expr(mod["main"])
        rewriter.builder_.update_func(mod.get_global_var("main"), new_main)
        return relax.transform.DeadCodeElimination(["main"])(rewriter.builder_.get())
