"""What happens when a schedule rule raises on a PrimFunc instead of returning ``None``.

A rule that does not handle a function returns ``None`` and the next rule is tried: that is
normal and silent. A rule that raises has a bug; the compilation still goes on with the next
rule (the function gets a simpler, slower schedule), but the user is told with a
:class:`ScheduleRuleWarning` naming the function and the rule. It is issued while TVM
compiles, when sparse-tvm hides stderr unless verbose (:func:`sparse_tvm.logs.native_quiet`),
so ``--verbose`` / ``SPARSE_TVM_VERBOSE=1`` shows it; ``warnings.catch_warnings`` catches it
either way. Under
``SPARSE_TVM_STRICT_SCHEDULES=1`` (the test suite sets it) the failure is an error instead, so
that no rule bug passes the tests as slow code.
"""

from __future__ import annotations

import os
import warnings

STRICT_ENV = "SPARSE_TVM_STRICT_SCHEDULES"


class ScheduleRuleWarning(UserWarning):
    """A schedule rule raised on a PrimFunc; the function got the next rule's schedule."""


class ScheduleRuleError(RuntimeError):
    """A schedule rule raised on a PrimFunc under ``SPARSE_TVM_STRICT_SCHEDULES=1``.

    Not a :class:`~sparse_tvm.errors.SparseTVMError`: it is a bug of sparse-tvm (or TVM) that
    no user input can fix, and only the strict setting for developers makes it an error.
    Raised inside a TVM pass, it reaches the caller of the pass as a ``RuntimeError`` with
    the same message (TVM's FFI keeps the message, not the class).
    """


def strict_schedules() -> bool:
    """Whether a raising schedule rule is an error (``SPARSE_TVM_STRICT_SCHEDULES=1``)."""
    return os.environ.get(STRICT_ENV, "").lower() in ("1", "true", "yes")


def report_rule_failure(func_name: str, rule_name: str, err: BaseException) -> None:
    """Warn that ``rule_name`` raised ``err`` on ``func_name`` (raise, when strict)."""
    reason = " ".join(str(err).split())[:300] or type(err).__name__
    what = (
        f"schedule rule {rule_name} failed on PrimFunc {func_name} ({type(err).__name__}: {reason})"
    )
    if strict_schedules():
        raise ScheduleRuleError(f"{what} [{STRICT_ENV}=1]") from err
    warnings.warn(
        f"{what}; it gets the next rule's schedule and may run slower: please report this",
        ScheduleRuleWarning,
        stacklevel=3,
    )


__all__ = [
    "STRICT_ENV",
    "ScheduleRuleError",
    "ScheduleRuleWarning",
    "report_rule_failure",
    "strict_schedules",
]
