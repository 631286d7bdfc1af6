"""Lower a Relax model to a *program*: a straight sequence of kernel calls over named tensors.

Stages, in order:

1. ``DenseToSparse``       the chosen layers become micro sparse kernel calls (``MicroLowering``)
2. ``BindParams``          the weights left dense become constants; a QDQ model's float32
                           -> 8-bit quantize ops become one kernel each, its dequantize ->
                           max pool -> quantize a max pool of the 8-bit values
                           (``quantized_activations``)
3. Relax legalize + fuse   ``LegalizeOps``, ``FoldConstant``, ``FuseOps``, ``FuseTIR``; reshapes
                           that only relabel memory become ``R.reshape`` (views, no copy)
4. walk ``main``           every binding is a kernel call, a view, or unsupported (error)
5. build the kernels       each PrimFunc through :func:`micro_schedule`, then TVM's ``c`` target

The result, :class:`Program`, holds everything the emitter needs: tensors (inputs, outputs,
intermediates, constants), the calls in order, the kernels' C source and their workspace needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from sparse_tvm.errors import CompileError
from sparse_tvm.frontend import ImportedModel
from sparse_tvm.logs import native_quiet
from sparse_tvm.micro.c_functions import compile_plain_c
from sparse_tvm.micro.lowering import MicroLowering
from sparse_tvm.micro.quantized_activations import QuantizedActivations
from sparse_tvm.micro.schedule import micro_schedule
from sparse_tvm.transform import DenseToSparse, SparsePlan

# The runtime functions a kernel may call; model.c provides them. Anything else (thread pool,
# error reporting) means the kernel cannot run without the TVM runtime.
ALLOWED_RUNTIME_CALLS = {"TVMBackendAllocWorkspace", "TVMBackendFreeWorkspace"}

C_TARGET_CONFIG = {"tirx.disable_vectorize": True, "tirx.disable_assert": True}


@dataclass
class Tensor:
    """One buffer of the program. ``root`` is the tensor whose memory a view shares."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    kind: str  # "input", "intermediate", "constant"
    value: np.ndarray | None = None
    root: int | None = None  # set for views (reshapes)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass
class Call:
    """``kernel(*args)``: the last ``n_outputs`` args are written."""

    kernel: str  # the kernel's C function (a PrimFunc name until ``lower`` prefixes it)
    args: list[int]
    n_outputs: int = 1


@dataclass
class Program:
    tensors: list[Tensor]
    calls: list[Call]
    inputs: list[int]
    outputs: list[int]  # tensors returned by main, in order (may be views or inputs)
    input_names: list[str]
    output_names: list[str]
    kernel_source: str = ""
    workspace: dict[str, int] = field(default_factory=dict)  # kernel -> bytes (upper bound)

    def storage(self, index: int) -> int:
        """The tensor whose memory ``index`` uses (itself unless it is a view)."""
        tensor = self.tensors[index]
        return tensor.index if tensor.root is None else tensor.root


def relax_pipeline() -> tvm.transform.Pass:
    return tvm.transform.Sequential(
        [
            relax.transform.LegalizeOps(),
            relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(),
            relax.transform.FuseOps(),
            relax.transform.FuseTIR(),
            relax.transform.DeadCodeElimination(),
            relax.transform.RewriteDataflowReshape(),
        ]
    )


def _shape_dtype(expr: relax.Expr) -> tuple[tuple[int, ...], str]:
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        raise CompileError(f"the model has a non-tensor value ({ty}): not supported on micro")
    try:
        return tuple(int(s) for s in ty.shape), str(ty.dtype)
    except (TypeError, ValueError):
        raise CompileError(
            "the model has dynamic shapes: give static ones with --input-shapes"
        ) from None


class _Walker:
    def __init__(self, imported: ImportedModel, mod: tvm.IRModule) -> None:
        self.mod = mod
        self.tensors: list[Tensor] = []
        self.calls: list[Call] = []
        self.by_var: dict[relax.Var, int] = {}
        self.constants: list[tuple[tvm.ir.expr.GenericConst, int]] = []
        self.imported = imported

    def add(self, name: str, expr: relax.Expr, kind: str, **kw) -> int:
        shape, dtype = _shape_dtype(expr)
        tensor = Tensor(len(self.tensors), name, shape, dtype, kind, **kw)
        self.tensors.append(tensor)
        return tensor.index

    def arg(self, expr: relax.Expr) -> int:
        if isinstance(expr, relax.Var):
            if expr not in self.by_var:
                raise CompileError(f"unsupported value '{expr.name}' in the model")
            return self.by_var[expr]
        if isinstance(expr, tvm.ir.expr.GenericConst):
            for const, index in self.constants:
                if const.same_as(expr):
                    return index
            index = self.add(f"c{len(self.constants)}", expr, "constant", value=expr.value.numpy())
            self.constants.append((expr, index))
            return index
        raise CompileError(f"unsupported argument {type(expr).__name__} in a kernel call")

    def binding(self, var: relax.Var, value: relax.Expr) -> None:
        if isinstance(value, relax.Var):
            self.by_var[var] = self.by_var[value]
            return
        op = (
            value.op.name
            if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op)
            else ""
        )
        if op == "relax.call_tir":
            if len(value.args) > 2:
                raise CompileError(
                    "kernels with symbolic shape arguments are not supported on micro"
                )
            n_constants = len(self.constants)
            args = [self.arg(a) for a in value.args[1].fields]
            params = self.mod[value.args[0]].params
            new = {index for _, index in self.constants[n_constants:]}
            for position, index in enumerate(args):
                if index in new:  # name a constant after the kernel parameter it first feeds
                    self.tensors[index].name = f"{value.args[0].name_hint}: {params[position].name}"
            if isinstance(var.ty, relax.TupleType):
                raise CompileError("kernels with several outputs are not supported on micro yet")
            out = self.add(var.name, var, "intermediate")
            self.calls.append(Call(value.args[0].name_hint, [*args, out]))
            self.by_var[var] = out
        elif op == "relax.reshape":
            source = (
                self.by_var.get(value.args[0]) if isinstance(value.args[0], relax.Var) else None
            )
            if source is None:
                source = self.arg(value.args[0])
            root = self.tensors[source].root
            view = self.add(var.name, var, "view", root=source if root is None else root)
            self.by_var[var] = view
        else:
            raise CompileError(
                f"operator {op or type(value).__name__} is left after lowering: "
                "not supported on microcontrollers yet"
            )

    def walk(self, func: relax.Function) -> Program:
        inputs = []
        for param, name in zip(func.params, self.imported.input_names):
            index = self.add(name, param, "input")
            self.by_var[param] = index
            inputs.append(index)
        if len(func.params) != len(self.imported.input_names):
            raise CompileError("the model has parameters that are not inputs after binding")
        for block in func.body.blocks:
            for binding in block.bindings:
                if not isinstance(binding, relax.VarBinding):
                    raise CompileError("match_cast bindings are not supported on micro")
                self.binding(binding.var, binding.value)
        body = func.body.body
        results = body.fields if isinstance(body, relax.Tuple) else [body]
        outputs = [self.arg(r) for r in results]
        return Program(
            self.tensors,
            self.calls,
            inputs,
            outputs,
            list(self.imported.input_names),
            list(self.imported.output_names),
        )


_FUNC_START = re.compile(r"int32_t (\w+)\([^)]*\) \{")
_WORKSPACE = re.compile(r"TVMBackendAllocWorkspace\([^,]+, [^,]+, \(uint64_t\)(\d+)ULL")
_RUNTIME_CALL = re.compile(r"\b(TVM\w+)\(")


def _workspaces(source: str) -> dict[str, int]:
    """Upper bound of the workspace bytes each kernel allocates (sum of its allocations)."""
    starts = [(m.start(), m.group(1)) for m in _FUNC_START.finditer(source)]
    out = {}
    for i, (start, name) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(source)
        sizes = [int(s) for s in _WORKSPACE.findall(source, start, end)]
        out[name] = sum(-(-s // 16) * 16 for s in sizes)
    return out


def build_kernels(
    mod: tvm.IRModule, names: set[str], prefix: str = ""
) -> tuple[str, dict[str, int]]:
    """C source of the called PrimFuncs (TVM's ``c`` target, plain C functions of data
    pointers: :mod:`~sparse_tvm.micro.c_functions`) and their workspace bytes.

    The C symbols are ``<prefix><name>``, so that two models can share a firmware.
    """
    funcs = {
        prefix + gv.name_hint: micro_schedule(func)
        for gv, func in mod.functions.items()
        if isinstance(func, tvm.tirx.PrimFunc) and gv.name_hint in names
    }
    with tvm.transform.PassContext(opt_level=3, config=C_TARGET_CONFIG), native_quiet():
        source = compile_plain_c(funcs)
    foreign = set(_RUNTIME_CALL.findall(source)) - ALLOWED_RUNTIME_CALLS
    if foreign:
        raise CompileError(
            f"generated kernels call TVM runtime functions {sorted(foreign)}: "
            "not available on a microcontroller"
        )
    return source, _workspaces(source)


def lower(imported: ImportedModel, plans: list[SparsePlan], prefix: str = "model") -> Program:
    """Run the stages of the module doc on an imported model; kernels are named
    ``<prefix>_<PrimFunc name>``."""
    mod = DenseToSparse(plans, MicroLowering())(imported.mod)
    present = {p.name for p in mod["main"].params}
    binding = {k: tvm.runtime.tensor(v) for k, v in imported.params.items() if k in present}
    mod = relax.transform.BindParams("main", binding)(mod)
    mod = QuantizedActivations()(mod)
    for name, dtype in zip(imported.input_names, imported.input_dtypes):
        if dtype != "float32":
            raise CompileError(f"input '{name}' is {dtype}: micro builds take float32 inputs")
    try:
        mod = relax_pipeline()(mod)
        program = _Walker(imported, mod).walk(mod["main"])
        program.kernel_source, program.workspace = build_kernels(
            mod, {call.kernel for call in program.calls}, f"{prefix}_"
        )
        for call in program.calls:
            call.kernel = f"{prefix}_{call.kernel}"
    except CompileError:
        raise
    except Exception as err:  # TVM reports failures as many exception types
        message = " ".join(str(err).split())[:300]
        raise CompileError(
            f"TVM failed to lower the model for a microcontroller ({type(err).__name__}: "
            f"{message}); try --dense, and report the model if that fails too"
        ) from err
    for index in program.outputs:
        if program.tensors[index].dtype != "float32":
            raise CompileError("micro builds return float32 outputs only")
    return program
