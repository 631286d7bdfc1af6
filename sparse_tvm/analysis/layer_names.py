"""Display names of layers: the PyTorch module path or the ONNX node, not the weight tensor.

A :class:`~sparse_tvm.analysis.layers.Layer` is keyed by its weight parameter, whose name is
the ONNX initializer name (``val_86``, ``onnx::MatMul_62`` in PyTorch exports): tuning records,
layer timings, ``prune --exclude`` and the micro back end's C identifiers use that key. The
report names a layer by the node that applies the weight instead:

- the torch dynamo exporter (``torch.onnx.export(dynamo=True)``) writes each node's module
  scopes into ``node.metadata_props`` (``pkg.torch.onnx.name_scopes``, else ``namespace``):
  the innermost module scope is the module path (``encoder.layers.0.linear1``);
- the legacy exporter (``dynamo=False``) names nodes ``/encoder/layers.0/linear1/MatMul``:
  one unqualified module name per level, then the operator;
- any other graph: the node's name as written.

A weight named ``<module path>.<sub>.weight`` (``block.self_attn.out_proj.weight`` used by
``block.self_attn``) names the finer module. Layers that still share a name get the operator
or node name appended. onnxruntime's folding drops ``metadata_props``; ``frontend.fold`` copies
them back by node name, so the imported graph carries them.
"""

from __future__ import annotations

import ast
from collections import Counter
from collections.abc import Sequence

import onnx

# the input that holds the weight, per ONNX operator, as sparse-tvm's layers read it
_WEIGHT_INPUT = {"MatMul": 1, "Gemm": 1, "Conv": 1}
# operators a weight may pass through on its way to the layer (a Gemm's B written as
# Transpose(W) by some exporters, before folding)
_PASS_THROUGH = {"Transpose", "Identity"}
_SCOPES = "pkg.torch.onnx.name_scopes"
_NAMESPACE = "namespace"


def weight_consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    """Per initializer, the MatMul / Gemm / Conv nodes that take it as their weight (directly
    or through Transpose / Identity), in graph order (the order TVM imports them in)."""
    initializers = {t.name for t in model.graph.initializer}
    produced = {out: node for node in model.graph.node for out in node.output}
    found: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        index = _WEIGHT_INPUT.get(node.op_type)
        if index is None or len(node.input) <= index or node.domain not in ("", "ai.onnx"):
            continue
        name = node.input[index]
        seen = 0
        while name not in initializers and name in produced and seen < 4:
            source = produced[name]
            if source.op_type not in _PASS_THROUGH or not source.input:
                break
            name, seen = source.input[0], seen + 1
        if name in initializers:
            found.setdefault(name, []).append(node)
    return found


def _metadata(node: onnx.NodeProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in node.metadata_props}


def _dynamo_scope(metadata: dict[str, str]) -> str | None:
    """The innermost module scope the dynamo exporter recorded ('' at the root), or None."""
    scopes = None
    if _SCOPES in metadata:
        try:
            scopes = [str(s) for s in ast.literal_eval(metadata[_SCOPES])]
        except (ValueError, SyntaxError):
            scopes = None
    if scopes is None and _NAMESPACE in metadata:
        # ": __main__.M/encoder: torch...Sequential/encoder.0: torch...Linear/linear: aten..."
        scopes = [part.split(":", 1)[0].strip() for part in metadata[_NAMESPACE].split("/")]
    if not scopes:
        return None
    modules = [s for s in scopes[:-1] if s]  # the last scope is the operator's own
    return modules[-1] if modules else ""


def _legacy_scope(node_name: str) -> str | None:
    """The module path of a legacy-exporter node name ``/encoder/layers.0/linear1/MatMul``.

    Each level is the unqualified name of its module (``torch.onnx.utils`` keeps the atoms
    from the last non-numeric one: ``layers.0``, and ``encoder.0`` for an ``nn.Sequential``
    child); the last level is the operator.
    """
    if not node_name.startswith("/"):
        return None
    levels = [level for level in node_name.split("/")[1:-1] if level]
    path: list[str] = []
    for level in levels:
        atoms = level.split(".")
        head = max((i for i, a in enumerate(path) if not a.isdigit()), default=None)
        own = path[head:] if head is not None else []
        extra = atoms[len(own) :]
        if own and atoms[: len(own)] == own and extra and all(a.isdigit() for a in extra):
            path += extra  # an indexed child of the module itself (nn.Sequential, ModuleList)
        else:
            path += atoms
    return ".".join(path)


def module_path(node: onnx.NodeProto, metadata: dict[str, str] | None = None) -> str | None:
    """The PyTorch module path of ``node`` ('' for the root module), or None when the graph
    does not say (not a PyTorch export)."""
    scope = _dynamo_scope(metadata if metadata is not None else _metadata(node))
    return scope if scope is not None else _legacy_scope(node.name)


def _refine(path: str, weight: str) -> str:
    """``block.self_attn`` applying ``block.self_attn.out_proj.weight``: the finer module."""
    owner = weight.rpartition(".")[0]
    if owner and (not path or owner.startswith(path + ".")):
        return owner
    return path


def display_name(node: onnx.NodeProto, weight: str, metadata: dict[str, str] | None = None) -> str:
    """The name the report gives the layer of ``node`` with the weight initializer ``weight``:
    its module path when the export carries one, else the node name ('' if the node has
    none)."""
    path = module_path(node, metadata)
    if path is None:
        return node.name
    path = _refine(path, weight)
    return path or node.name


def layer_display_names(weights: Sequence[str], model: onnx.ModelProto | None) -> list[str]:
    """The display name of each layer, given the weight names of the layers in program order.

    Parameters
    ----------
    weights
        Each layer's weight initializer name (``Layer.name``), in the order ``find_layers``
        returns them.
    model
        The ONNX graph TVM imported (``ImportedModel.onnx_model``); None gives no names.

    Returns
    -------
    list of str
        One name per layer, unique where the graph allows; '' where the graph names nothing
        (the report then shows the weight name).
    """
    if model is None:
        return [""] * len(weights)
    consumers = weight_consumers(model)
    count = Counter(weights)
    taken: Counter[str] = Counter()
    picked: list[onnx.NodeProto | None] = []
    for weight in weights:
        users = consumers.get(weight, [])
        # the k-th layer with this weight is the k-th node using it, when the counts agree
        picked.append(users[taken[weight]] if len(users) == count[weight] else None)
        taken[weight] += 1
    names = []
    for weight, node in zip(weights, picked, strict=True):
        if node is None:
            names.append("")
            continue
        names.append(display_name(node, weight))
    return _disambiguate(names, picked)


def _disambiguate(names: list[str], nodes: list[onnx.NodeProto | None]) -> list[str]:
    """Append the operator (or, if that is shared too, the node name) to repeated names."""
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        if name:
            groups.setdefault(name, []).append(i)
    out = list(names)
    for name, members in groups.items():
        if len(members) < 2:
            continue
        ops = [nodes[i].op_type for i in members]
        for i in members:
            if len(set(ops)) == len(ops):
                suffix = nodes[i].op_type
            else:
                suffix = nodes[i].name.rpartition("/")[2] or f"#{members.index(i) + 1}"
            out[i] = f"{name} ({suffix})"
    repeated = {name for name, n in Counter(filter(None, out)).items() if n > 1}
    seen: Counter[str] = Counter()
    for i, name in enumerate(out):
        if name in repeated:  # nodes named alike (or unnamed): numbered in program order
            seen[name] += 1
            out[i] = f"{name} #{seen[name]}"
    return out


__all__ = ["display_name", "layer_display_names", "module_path", "weight_consumers"]
