import pytest

from sparse_tvm.frontend import import_onnx
from sparse_tvm.micro.emit import output_storage
from sparse_tvm.micro.lower import lower
from sparse_tvm.micro.planner import ALIGNMENT, check_plan, plan_memory
from tests.micro.conftest import micro_model


def _align(n):
    return -(-n // ALIGNMENT) * ALIGNMENT


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_arena_is_the_peak_of_live_tensors(name):
    program = lower(import_onnx(micro_model(name, sparsity=None)), [])
    external = set(output_storage(program))
    plan = plan_memory(program, external)
    check_plan(plan)
    # a chain of layers: the best possible arena is the largest set of buffers alive at once
    peak = max(
        sum(_align(b.nbytes) for b in plan.buffers if b.first <= step <= b.last)
        for step in range(len(program.calls) + 1)
    )
    assert plan.size == peak
    assert plan.size <= plan.unshared_size
    # the output is written straight into the caller's array, never into the arena
    assert all(program.storage(o) not in plan.offsets for o in program.outputs)


def test_cnn_arena_holds_the_two_largest_activations():
    program = lower(import_onnx(micro_model("cnn", sparsity=None)), [])
    plan = plan_memory(program, set(output_storage(program)))
    # conv1 output (16x16x16) and conv2 output (32x16x16) floats are alive together
    assert plan.size == (16 + 32) * 16 * 16 * 4
    assert plan.size < plan.unshared_size
