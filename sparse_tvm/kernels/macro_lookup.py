"""A fast way for TVMScript macros to find their parser (TVM 0.27 spends seconds on it).

Each ``T.macro`` call inside a ``T.prim_func`` looks for the parser that is running by walking
the Python call stack. TVM 0.27 does that with ``inspect.getouterframes``, which builds a
``FrameInfo`` for every frame: it reads each frame's source file and, to name the module, scans
``sys.modules``. With the ~100 frames a kernel build sits under and a few thousand modules
loaded, one macro call cost about 50 ms; building the 36 sparse kernels of a MiniLM encoder
(each built several times while its layer is measured) spent 120 of its 170 s of compile time
there. Walking ``frame.f_back`` and reading ``f_globals`` finds the same parser (the first frame
whose globals hold it, innermost first, as TVM's loop) without touching any source file.
"""

from __future__ import annotations

import sys

from tvm.script.parser.core.parser import ScriptMacro

_PATCHED = "_sparse_tvm_fast_lookup"
# TVM's own lookup, kept for the tests that compare the two
TVM_FIND_PARSER_DEF = ScriptMacro._find_parser_def


def _find_parser_def(self: ScriptMacro):  # noqa: ARG001 - the method's signature
    name = ScriptMacro.parser_object_name
    frame = sys._getframe(1)
    while frame is not None:
        parser = frame.f_globals.get(name)
        if parser is not None:
            return parser
        frame = frame.f_back
    raise RuntimeError(f"{name} not available")


def install_fast_macro_lookup() -> None:
    """Make every ``ScriptMacro`` find its parser by walking frames (idempotent)."""
    if getattr(ScriptMacro._find_parser_def, _PATCHED, False):
        return
    _find_parser_def.__dict__[_PATCHED] = True
    ScriptMacro._find_parser_def = _find_parser_def
