"""``TensorSpec``: the name, shape and dtype of a compiled model's input or output."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TensorSpec:
    """Name, static shape and dtype of a model input or output.

    ``dynamic_dims`` (inputs): per axis, the name of the dimension the ONNX model left dynamic
    and the compiler fixed to ``shape`` (``"?"`` when unnamed), ``None`` for an axis the model
    fixes; ``None`` altogether when unknown (an artefact written before it was recorded).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    dynamic_dims: tuple[str | None, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.dynamic_dims is not None:
            data["dynamic_dims"] = list(self.dynamic_dims)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorSpec:
        dynamic = data.get("dynamic_dims")
        return cls(
            str(data["name"]),
            tuple(int(s) for s in data["shape"]),
            str(data["dtype"]),
            None if dynamic is None else tuple(None if d is None else str(d) for d in dynamic),
        )
