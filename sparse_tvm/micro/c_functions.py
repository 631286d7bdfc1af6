"""Kernels as plain C functions: ``int32_t kernel(float *x, int8_t *w, float *y)``.

TVM's ``c`` target gives every public PrimFunc tvm-ffi's packed calling convention: the
caller builds a ``DLTensor`` descriptor (40 bytes, plus its shape) and a ``TVMFFIAny`` slot
per argument, and the kernel opens with code that unpacks them. On a microcontroller that is
flash spent on nothing (about 2 KB for the digits CNN) and instructions on every call. TVM
0.27 has no unpacked API pass any more, so this module builds one from the parts it has:

1. before the TIR pipeline, each buffer parameter becomes a typed data pointer, the buffer
   declared on it in the body (``DeclBuffer``), and the function gets a non-default calling
   convention, which ``MakePackedAPI`` leaves alone;
2. after the pipeline (allocations are hoisted by then), the body is wrapped in the
   ``device_type`` / ``device_id`` scope that ``LowerTVMBuiltin`` needs to turn an
   intermediate buffer into a ``TVMBackendAllocWorkspace`` call (the packed API would have
   read the device from the first tensor: always the CPU, device 0, here), and ends with
   ``return 0``; a failed workspace allocation returns -1 as before;
3. the host finalisation passes and the ``c`` code generator run as ``tvm.compile`` runs them.

Shapes are static, so nothing of the descriptors was needed: the micro build already
disables TVM's argument asserts.
"""

from __future__ import annotations

import tvm
from tvm import tirx
from tvm.tirx.buffer import is_buffer_var
from tvm.tirx.build import split_host_device_mods, tir_to_runtime

# CallingConv::kCPackedFunc: "already lowered", which MakePackedAPI skips
_LOWERED_CALLING_CONV = 1
_CPU = tvm.ir.StringImm("default")


def _int32(value: int) -> tvm.tirx.IntImm:
    return tvm.tirx.IntImm("int32", value)


def plain_c_function(func: tirx.PrimFunc, symbol: str) -> tirx.PrimFunc:
    """``func`` taking its buffers as data pointers, exported as ``symbol`` (step 1)."""
    params, declarations = [], []
    for param in func.params:
        if not is_buffer_var(param):
            params.append(param)  # a scalar is passed as itself
            continue
        pointer = tvm.tirx.Var(param.name, tvm.ir.PointerType(tvm.ir.PrimType(param.dtype)))
        params.append(pointer)
        declarations.append(tirx.DeclBuffer(param, data=pointer))
    body = tirx.SeqStmt([*declarations, func.body]) if declarations else func.body
    plain = tirx.PrimFunc(params, body, tvm.ir.PrimType("int32"), func.attrs)
    return plain.with_attr("global_symbol", symbol).with_attr("calling_conv", _LOWERED_CALLING_CONV)


def _on_cpu(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """Step 2: the device scope around the lowered body, then ``return 0``."""
    body = tirx.AttrStmt(_CPU, "device_id", _int32(0), func.body)
    body = tirx.AttrStmt(_CPU, "device_type", _int32(1), body)
    body = tirx.SeqStmt([body, tirx.Return(_int32(0))])
    # one function alone would otherwise get a packed `__tvm_ffi_main` wrapper calling it
    return func.with_body(body).with_attr("tirx.is_entry_func", False)


def compile_plain_c(functions: dict[str, tirx.PrimFunc]) -> str:
    """C source of ``functions`` (symbol -> PrimFunc), each a plain C function of its
    buffers' data pointers returning 0 (or -1: a workspace allocation failed). Run inside
    the caller's ``PassContext``."""
    target = tvm.target.Target({"kind": "c"})
    mod = tvm.IRModule({name: plain_c_function(f, name) for name, f in functions.items()})
    mod = tirx.transform.BindTarget(target.with_host(target))(mod)
    pipeline, finalize_host, _ = tirx.get_default_tir_pipeline(target)
    mod = pipeline(mod)
    mod = tvm.IRModule({gv: _on_cpu(f) for gv, f in mod.functions.items()})
    host, devices = split_host_device_mods(mod)
    if devices:
        raise ValueError("micro kernels must run on the host only")
    return tir_to_runtime(finalize_host()(host), {}, target).inspect_source()
