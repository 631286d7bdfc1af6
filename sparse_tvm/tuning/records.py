"""Tuning records: storage only. The records folder, the layer key, the board's layer timings.

A records folder holds a MetaSchedule ``JSONDatabase`` (``database_workload.json`` +
``database_tuning_record.json``). ``JSONDatabase`` appends one line per measured record and
closes the file after each line, so an interrupted run keeps every record of its finished
batches; what it does not do is load a file whose last line a kill tore mid-write (it refuses
the whole file): :class:`RecordStore` drops a torn line, with a warning, before loading.
:func:`tuning_lock` lets one ``tune`` run write a folder at a time; :meth:`RecordStore.export`,
:meth:`RecordStore.merge` and :func:`load_exported` move records to and from ``schedules/``.
Searching (and continuing an interrupted search) is the tuner's:
:func:`~sparse_tvm.tuning.tune_kernel.tune_kernel`, :mod:`~sparse_tvm.tuning.search`; finding
the kernel of a layer in a database is :mod:`~sparse_tvm.tuning.lookup`'s.

The layer key
-------------
MetaSchedule keys its records by the structural hash of the tuned IRModule. The sparse kernels
read the sparsity structure from arguments (``indices``/``indptr``), so two layers with the same
shapes and number of blocks but another structure have the same IR. The search spaces'
workloads therefore carry :func:`structure_digest` as an attribute: op, shapes, block, layout,
batch and fusion are in the workload's IR, the target in its lanes/cores attributes and in the
record, the structure in the digest. :func:`workload_key` names a sparse workload by all of
these fields in one string, with the same structure digest; :func:`layer_key` is it for a whole
layer, the key of the board's layer timings. (The workloads keep carrying the digest alone, not
the whole key: a new attribute value would change their hash and lose the records already
tuned, ``schedules/x86.json`` among them.)

Tuning on a board (whose code this host cannot time) also writes ``layer_timings.json``: per
layer, the dense layer and each tuned candidate measured on the board
(:meth:`RecordStore.add_layer_timing`, keyed by :func:`layer_key`); ``compile`` decides dense
or sparse from it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tvm
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.tune_context import _normalize_mod

from sparse_tvm.errors import RecordsError
from sparse_tvm.formats.block_sparse import BlockSparseWeight
from sparse_tvm.target.machine import machine_key

if TYPE_CHECKING:
    from sparse_tvm.analysis.layers import Layer

__all__ = [
    "EXPORT_FORMAT",
    "LAYER_TIMING_FILE",
    "LOCK_FILE",
    "RECORD_FILE",
    "WORKLOAD_FILE",
    "RecordStore",
    "RecordsError",
    "blocks_digest",
    "layer_key",
    "load_exported",
    "measured_records",
    "records_folder",
    "structure_digest",
    "tuning_lock",
    "workload_key",
]

WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
LAYER_TIMING_FILE = "layer_timings.json"
EXPORT_FORMAT = "sparse-tvm-records"
LOCK_FILE = ".tuning.lock"
# AddToDatabase stores a failed trial with run_secs [1e10]
_FAILED_SECS = 1e9


# ---------------------------------------------------------------------------------- layer key


def structure_digest(weight: BlockSparseWeight) -> str:
    """sha1 of the block structure (shape, block, indptr, indices): the sparsity part of the
    layer key, carried by the search spaces' workloads (``sparse_tvm.structure``)."""
    nnz = weight.nnz_blocks
    # repr of the weight's own tuples, as it always was: the digests in records stay valid
    return _digest(repr((weight.shape, weight.block)), weight.indptr, weight.indices[:nnz])


def blocks_digest(shape, block, indptr: np.ndarray, indices: np.ndarray) -> str:
    """sha1 of a block structure given by its arrays (the int8 16x4 blocks' digest)."""
    return _digest(repr((tuple(shape), tuple(block))), indptr, indices)


def _digest(shape_repr: str, indptr: np.ndarray, indices: np.ndarray) -> str:
    h = hashlib.sha1()
    h.update(shape_repr.encode())
    h.update(np.ascontiguousarray(indptr, np.int32).tobytes())
    h.update(np.ascontiguousarray(indices, np.int32).tobytes())
    return h.hexdigest()


def _pattern_digest(shape: Sequence[int], block: tuple[int, int], pattern: np.ndarray) -> str:
    """:func:`structure_digest` of the weight whose nonzero blocks are ``pattern``."""
    indptr = np.concatenate([[0], np.cumsum(pattern.sum(axis=1))])
    indices = np.nonzero(pattern)[1]  # row-major: sorted within each block row, as BSR stores
    return _digest(repr((tuple(shape), block)), indptr, indices)


def workload_key(
    op_kind: str,
    weight_shape: Sequence[int],
    block: Sequence[int] | str,
    m: int,
    x_layout: str,
    batch: int | None,
    bias: bool,
    relu: bool,
    target: tvm.target.Target | dict | str | None,
    structure: np.ndarray,
    *,
    op_attrs: Mapping[str, Any] | None = None,
    relu6: bool = False,
    gelu: bool = False,
) -> str:
    """Return a stable key for a sparse layer: same shape and structure -> same key.

    Parameters
    ----------
    op_kind : str
        The kernel family, e.g. ``"matmul"`` or ``"conv2d"``.
    weight_shape : sequence of int
        The weight's ``(n, k)`` view.
    block : (r, c) or "rxc"
        The block shape; ``"1x1"`` is CSR.
    m, x_layout, batch, bias, relu
        The activation columns, the activation layout, the batch and the fused epilogue.
    target : Target, dict or str, optional
        The target the records are measured on; None where the key's user stores the target
        next to it (the board's layer timings).
    structure : np.ndarray
        The nonzero-block pattern, one entry per ``(r, c)`` block; only ``!= 0`` matters. It
        enters the key as the :func:`structure_digest` of a weight with these nonzero blocks.
    op_attrs : mapping, optional
        What else the op's timing depends on, JSON-serialisable (a conv's geometry, the stored
        weight layout); left out of the key when None.
    relu6 : bool
        The ReLU is a ReLU6; in the key only when set, so that other layers' keys stay.
    gelu : bool
        A GELU follows the bias; in the key only when set.

    Returns
    -------
    str
        ``<op>_<n>x<k>_b<r>x<c>_m<m>_<hash>``: readable, and a SHA-256 of every field.
    """
    r, c = _block_shape(block)
    shape = [int(d) for d in weight_shape]
    pattern = np.asarray(structure) != 0
    if pattern.ndim != 2:
        raise RecordsError(f"structure must be a 2-D block pattern, got {pattern.ndim} dimensions")
    if len(shape) == 2 and pattern.shape != (-(-shape[0] // r), -(-shape[1] // c)):
        raise RecordsError(
            f"structure {pattern.shape} does not match weight {tuple(shape)} in {r}x{c} blocks"
        )
    fields = {
        "op": op_kind,
        "weight_shape": shape,
        "block": [r, c],
        "m": int(m),
        "x_layout": x_layout,
        "batch": None if batch is None else int(batch),
        "bias": bool(bias),
        "relu": bool(relu),
        "target": None if target is None else str(tvm.target.Target(target)),
        "structure": _pattern_digest(shape, (r, c), pattern),
    }
    if relu6:
        fields["relu6"] = True
    if gelu:
        fields["gelu"] = True
    if op_attrs is not None:
        fields["op_attrs"] = dict(op_attrs)
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:20]
    dims = "x".join(str(d) for d in shape)
    return f"{op_kind}_{dims}_b{r}x{c}_m{int(m)}_{digest}"


def layer_key(layer: Layer, *, pattern: bool = True) -> str:
    """The key of a whole layer (not one format of it): :func:`workload_key` of its elements
    (1x1 blocks: the nonzero pattern), with what its dense timing depends on as well (input
    shape, stored weight layout, conv geometry). The board's layer timings are keyed by it;
    their target is stored next to the key, not in it.

    ``pattern=False`` leaves the nonzero pattern out (every entry counts as nonzero): the key
    of what the dense layer's timing depends on, shared by layers of the same shapes.
    """
    from sparse_tvm.transform.dense_to_sparse import kernel_options

    options = kernel_options(layer)
    structure = layer.weight != 0 if pattern else np.ones(layer.weight.shape, dtype=bool)
    return workload_key(
        layer.op,
        layer.shape,
        (1, 1),
        layer.m,
        options["x_layout"],
        options["batch"],
        options["bias"],
        options["relu"],
        None,
        structure,
        op_attrs={
            "input_shape": [int(d) for d in layer.input_shape],
            "weight_shape": [int(d) for d in layer.weight_shape],
            "transposed": bool(layer.transposed),
            "conv": repr(layer.conv),
        },
        relu6=options["relu6"],
        gelu=options.get("gelu", False),
    )


def _block_shape(block: Sequence[int] | str) -> tuple[int, int]:
    try:
        r, c = (int(v) for v in (block.split("x") if isinstance(block, str) else block))
    except ValueError:
        raise RecordsError(f"block must be (r, c) or 'rxc', got {block!r}") from None
    return r, c


# ------------------------------------------------------------------------------ record store


def records_folder(folder: str | os.PathLike) -> Path:
    """``folder`` as a writable records folder, created if missing (one-line errors)."""
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise RecordsError(f"records folder {path} is a file: name a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RecordsError(f"cannot create records folder {path}: {err.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise RecordsError(f"records folder {path} is not writable: name another folder")
    return path


@contextlib.contextmanager
def tuning_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold the records folder's tuning lock: one ``tune`` run writes a folder at a time.

    The lock is an ``flock`` on ``folder/.tuning.lock``, released when the run ends however it
    ends (the kernel drops it with the process). A second run fails at once in one line. Take
    it before opening a :class:`RecordStore`: opening repairs a torn last line, which must not
    happen under a running writer."""
    fd = os.open(records_folder(folder) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 100, 0).decode(errors="replace").strip() or "another process"
            raise RecordsError(
                f"records folder {folder} is being tuned by {holder}: wait for it to finish "
                "or name another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"sparse-tvm tune (pid {os.getpid()})".encode(), 0)
        yield
    finally:
        os.close(fd)


class RecordStore:
    """Tuning records of one folder: ``database_workload.json`` + ``database_tuning_record.json``.

    Parameters
    ----------
    folder : str or Path
        Created if missing. A torn last line (a run killed mid-write) is dropped with a warning.
    module_equality : str
        MetaSchedule's workload equality: ``"structural"``, or ``"ignore-tensor"`` for kernels
        that embed the weight values as constants (the structure digest still separates
        layers).
    """

    def __init__(self, folder: str | os.PathLike, *, module_equality: str = "structural"):
        self.folder = records_folder(folder)
        n_workloads = _repair_lines(self.folder / WORKLOAD_FILE, _check_workload, strict=True)
        _repair_lines(self.folder / RECORD_FILE, lambda v: _check_record(v, n_workloads))
        try:
            self.database = ms.database.JSONDatabase(
                work_dir=str(self.folder), module_equality=module_equality
            )
        except Exception as err:  # TVM raises its own error types
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise RecordsError(f"cannot load records in {self.folder}: {first}") from None

    def __len__(self) -> int:
        return len(self.database)

    def measured(
        self, mod: tvm.tirx.PrimFunc | tvm.IRModule, target: tvm.target.Target | None = None
    ) -> list[ms.database.TuningRecord]:
        """All records (failed trials included) of the workload ``mod`` [on ``target``]."""
        return measured_records(self.database, mod, target)

    # -- layer timings measured on a board ---------------------------------------------------

    def add_layer_timing(self, entry: dict) -> None:
        """Append one layer's measurements (a JSON object with ``"layer"``, its
        :func:`layer_key`, and ``"target"``)."""
        line = json.dumps(entry, sort_keys=True)
        with open(self.folder / LAYER_TIMING_FILE, "a") as f:
            f.write(line + "\n")

    def layer_timings(self, target: tvm.target.Target | dict | str) -> dict[str, dict]:
        """The latest entry of each layer measured for ``target``, by ``"layer"`` key."""
        path = self.folder / LAYER_TIMING_FILE
        target_str = machine_key(target)
        found: dict[str, dict] = {}
        if not path.exists():
            return found
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:  # a line torn by a kill mid-write
                continue
            if isinstance(entry, dict) and _machine_of(entry.get("target")) == target_str:
                found[str(entry.get("layer"))] = entry
        return found

    # -- shipping -----------------------------------------------------------------------------

    def export(self, path: str | os.PathLike, *, top_k: int | None = 1) -> Path:
        """Write the ``top_k`` best successful records of every workload to one JSON file.

        The file (``{"format", "workloads", "records"}``) is what ``schedules/`` ships; read it
        back with :meth:`merge` or :func:`load_exported`.
        """
        seen: list[ms.database.Workload] = []
        workloads: list[Any] = []
        records: list[Any] = []
        kept: dict[int, int] = {}
        for record in self.database.get_all_tuning_records():  # best first
            if _latency(record) is None:
                continue
            wid = next((i for i, w in enumerate(seen) if w.same_as(record.workload)), None)
            if wid is None:
                wid = len(seen)
                seen.append(record.workload)
                workloads.append(record.workload.as_json())
            if top_k is None or kept.get(wid, 0) < top_k:
                kept[wid] = kept.get(wid, 0) + 1
                records.append([wid, record.as_json()])
        data = {"format": EXPORT_FORMAT, "version": 1, "workloads": workloads, "records": records}
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data) + "\n")
        os.replace(tmp, path)
        return path

    def merge(self, path: str | os.PathLike) -> int:
        """Add the records of an exported file to this folder; returns how many were new."""
        return _commit_exported(self.database, _read_exported(path))


def load_exported(path: str | os.PathLike) -> ms.database.Database:
    """An in-memory database holding the records of an exported file (e.g. from ``schedules/``)."""
    database = ms.database.MemoryDatabase()
    _commit_exported(database, _read_exported(path))
    return database


def measured_records(
    database: ms.database.Database,
    mod: tvm.tirx.PrimFunc | tvm.IRModule,
    target: tvm.target.Target | dict | str | None = None,
) -> list[ms.database.TuningRecord]:
    """The records (failed trials included) of the workload ``mod`` in ``database``, on
    ``target`` when given; best first where the database sorts (``JSONDatabase`` does).

    What a rerun subtracts from its trial budget: the trials already measured."""
    mod = _normalize_mod(mod)
    if not database.has_workload(mod):
        return []
    workload = database.commit_workload(mod)
    target_str = None if target is None else machine_key(target)
    return [
        r
        for r in database.get_all_tuning_records()
        if r.workload.same_as(workload)
        and (target_str is None or machine_key(r.target) == target_str)
    ]


def _machine_of(target: Any) -> str | None:
    """:func:`machine_key` of a stored target string; None where it is not one."""
    try:
        return machine_key(str(target))
    except Exception:  # noqa: BLE001 - a hand-edited or foreign entry: matches nothing
        return None


# ---------------------------------------------------------------------------------- helpers


def _latency(record: ms.database.TuningRecord) -> float | None:
    if not record.run_secs:
        return None
    secs = float(np.mean([float(s) for s in record.run_secs]))
    return secs if secs < _FAILED_SECS else None


def _check_workload(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], str)


def _check_record(value: Any, n_workloads: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], int)
        and 0 <= value[0] < n_workloads
        and isinstance(value[1], list)
    )


def _repair_lines(path: Path, check, *, strict: bool = False) -> int:
    """Drop lines a kill tore (or that are not records) so that JSONDatabase can load the file.

    Returns the number of good lines. With ``strict`` (the workload table, whose line numbers
    the records refer to) only the last line may be dropped.
    """
    if not path.exists():
        return 0
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    good, dropped = [], []
    for number, line in enumerate(lines, start=1):
        try:
            ok = check(json.loads(line))
        except ValueError:
            ok = False
        if ok:
            good.append(line)
        elif strict and number != len(lines):
            raise RecordsError(f"line {number} of {path} is not a workload: the folder is corrupt")
        else:
            dropped.append(number)
    if dropped:
        warnings.warn(
            f"{path}: skipped {len(dropped)} unreadable line(s) {dropped[:5]} "
            "(a tuning run killed while writing)",
            stacklevel=3,
        )
    repaired = b"".join(line + b"\n" for line in good)
    if repaired != raw:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(repaired)
        os.replace(tmp, path)
    return len(good)


def _read_exported(path: str | os.PathLike) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise RecordsError(f"cannot read exported records {path}: {err}") from None
    if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
        raise RecordsError(
            f"{path} is not a sparse-tvm records file (written by RecordStore.export)"
        )
    return data


def _commit_exported(database: ms.database.Database, data: dict) -> int:
    workloads = [
        database.commit_workload(ms.database.Workload.from_json(w).mod) for w in data["workloads"]
    ]
    existing = database.get_all_tuning_records()
    known = [
        {json.dumps(r.as_json()[0]) for r in existing if r.workload.same_as(w)} for w in workloads
    ]
    added = 0
    for wid, record_json in data["records"]:
        record = ms.database.TuningRecord.from_json(record_json, workloads[wid])
        trace = json.dumps(record.as_json()[0])
        if trace not in known[wid]:
            known[wid].add(trace)
            database.commit_tuning_record(record)
            added += 1
    return added
