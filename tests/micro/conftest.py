"""Pruned example models for the micro tests, sized for a microcontroller."""

import shutil

from sparse_tvm.examples import mlp, small_cnn
from sparse_tvm.pruning import prune_magnitude
from tests.conftest import needs

CROSS_TOOLS = ("arm-none-eabi-gcc", "qemu-system-arm", "make")
missing = [tool for tool in CROSS_TOOLS if shutil.which(tool) is None]
needs_qemu = needs(
    not missing,
    f"{', '.join(missing)} not installed (apt-get install gcc-arm-none-eabi "
    "libnewlib-arm-none-eabi qemu-system-arm make)",
)
needs_host_cc = needs(
    shutil.which("cc") is not None and shutil.which("make") is not None,
    "no host C compiler / make",
)


def micro_model(name: str, pattern: str = "1x1", sparsity: float | None = 0.9):
    model = mlp() if name == "mlp" else small_cnn(size=16)
    return model if sparsity is None else prune_magnitude(model, sparsity, pattern)
