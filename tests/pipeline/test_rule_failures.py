"""A schedule rule that raises is reported (warning, or error when strict); one that does not
apply (returns None) is not."""

from __future__ import annotations

import warnings

import pytest
import tvm
from tvm import relax
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.script import ir as I
from tvm.script import relax as R

from sparse_tvm.pipeline import ApplyCPUSchedules, ScheduleRuleWarning
from sparse_tvm.pipeline.cpu import legalize_passes
from sparse_tvm.pipeline.cpu_rules import Elementwise
from sparse_tvm.pipeline.rule_failures import STRICT_ENV, ScheduleRuleError, report_rule_failure
from tests.conftest import RUN_TARGET

TARGET = tvm.target.Target(RUN_TARGET)  # AVX-512 where the host has it (conftest)


@I.ir_module
class AddOne:
    @R.function
    def main(x: R.Tensor((64, 64), "float32")) -> R.Tensor((64, 64), "float32"):
        return R.add(x, R.const(1.0, "float32"))


class Broken(ScheduleRule):
    def apply(self, func, target, _tunable):
        raise IndexError("list index out of range")


class NotMine(ScheduleRule):
    def apply(self, func, target, _tunable):
        return None


def _schedule(rules: list[ScheduleRule]) -> tvm.IRModule:
    with TARGET:
        mod = tvm.transform.Sequential(legalize_passes(TARGET))(AddOne)
        return ApplyCPUSchedules(rules)(mod)


def _add_is_scheduled(mod: tvm.IRModule) -> bool:
    (add,) = [f for gv, f in mod.functions_items() if gv.name_hint == "add"]
    return bool(add.attrs.get("tirx.is_scheduled", False))


def test_a_raising_rule_warns_with_function_and_rule_and_the_next_rule_schedules(monkeypatch):
    monkeypatch.delenv(STRICT_ENV, raising=False)
    with pytest.warns(ScheduleRuleWarning, match=r"rule Broken failed on PrimFunc add \(Index"):
        mod = _schedule([Broken(), Elementwise()])
    assert _add_is_scheduled(mod)


def test_a_raising_rule_is_an_error_when_strict(monkeypatch):
    monkeypatch.setenv(STRICT_ENV, "1")
    # TVM's FFI hands the error back as a RuntimeError with its message
    with pytest.raises(RuntimeError, match=rf"rule Broken failed on PrimFunc add .*{STRICT_ENV}"):
        _schedule([Broken(), Elementwise()])


def test_strict_mode_raises_schedule_rule_error(monkeypatch):
    monkeypatch.setenv(STRICT_ENV, "1")
    with pytest.raises(ScheduleRuleError, match="rule Broken failed on PrimFunc f"):
        report_rule_failure("f", "Broken", IndexError("x"))


def test_a_rule_that_does_not_apply_is_quiet(monkeypatch):
    monkeypatch.delenv(STRICT_ENV, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mod = _schedule([NotMine(), Elementwise()])
    assert _add_is_scheduled(mod)
    assert isinstance(mod["main"], relax.Function)
