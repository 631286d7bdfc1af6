"""``sparse-tvm``: a thin command line over the public Python API (``import sparse_tvm``).

Exit status: 0 on success; for a problem the user can fix one ``error: ...`` line on stderr
and the status of its kind (:data:`sparse_tvm.errors.EXIT_STATUS`: 2 usage, 3 model, 4 input
shape, 5 target, ... as the README lists); 130 when interrupted. ``--verbose`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from sparse_tvm.cli.progress import StatusLine
from sparse_tvm.errors import OutputError, SparseTVMError, UsageError, exit_status
from sparse_tvm.pruning.patterns import SMALL_WEIGHT


class CLIError(UsageError):
    """A bad option value or file found by the command line itself."""


def _shapes(text: str | None):
    if not text:
        return None
    from sparse_tvm.frontend import parse_input_shapes

    return parse_input_shapes(text)


_progress = StatusLine()


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning meant for the user as one line (``warning: ...``), not Python's two."""
    _say(f"warning: {message}")


def _say(line: str) -> None:
    _progress.say(line)


def _read_npz(path: str) -> dict:
    import numpy as np

    if not Path(path).is_file():
        raise CLIError(f"inputs file '{path}' not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except Exception:
        raise CLIError(
            f"'{path}' is not a readable .npz file: write one with "
            "numpy.savez(path, input_name=array)"
        ) from None


def _write_atomically(path: Path, write) -> None:
    """Write through a temporary file next to ``path`` so that no partial file is left."""
    if path.is_dir():
        raise OutputError(f"output '{path}' is a directory: give a file name")
    if not path.parent.exists():
        raise OutputError(f"output folder '{path.parent}' does not exist: create it first")
    from sparse_tvm.files import write_atomically

    try:
        write_atomically(path, write)
    except OSError as err:  # a read-only folder, a full disk: nothing is left behind
        raise OutputError(f"cannot write '{path}': {err.strerror or err}") from None


# -- commands --------------------------------------------------------------------------------
def cmd_targets(args) -> int:
    import sparse_tvm as st
    from sparse_tvm.target import resolve_target

    rows = [
        {
            "name": name,
            "family": preset.family,
            "description": preset.description,
            "tvm": resolve_target(name).to_json()["tvm"],
        }
        for name, preset in st.targets().items()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        width = max(len(r["name"]) for r in rows)
        for row in rows:
            print(f"{row['name'].ljust(width)}  {row['description']}")
            print(f"{''.ljust(width)}  tvm: {json.dumps(row['tvm'])}")
    return 0


def cmd_inspect(args) -> int:
    import sparse_tvm as st

    if args.report is not None:
        st.check_html_path(args.report)  # before the work
    report = st.inspect(
        args.model,
        input_shapes=_shapes(args.input_shapes),
        sparsity_threshold=args.sparsity_threshold,
    )
    print(report.to_json() if args.json else report)
    if args.report is not None:
        st.write_html(report, args.report)
        _say(f"wrote {args.report}")  # stderr: stdout may be --json
    return 0


def cmd_compile(args) -> int:
    import sparse_tvm as st

    out = Path(args.output)
    if out.is_dir():  # a Linux artefact is a file; a microcontroller project a new folder
        raise OutputError(f"output '{out}' is a directory that exists: name a new file or folder")
    if not out.parent.exists():
        raise OutputError(f"output folder '{out.parent}' does not exist: create it first")
    compiled = st.compile(
        args.model,
        args.target,
        records=args.records,
        sparsity_threshold=args.sparsity_threshold,
        dense=args.dense,
        input_shapes=_shapes(args.input_shapes),
        measure=not args.no_measure,
        cross_compiler=args.cross_compiler,
        output=out,
        report=args.report,
        progress=_say,
    )
    print(compiled.report)
    if out.is_dir():
        print(
            f"wrote {out}  (next: cd {out} && make host, or make run on qemu; README: Microcontrollers)"
        )
    else:
        print(f"wrote {out}")
    if args.report is not None:
        _say(f"wrote {args.report}")
    return 0


def cmd_run(args) -> int:
    import numpy as np

    import sparse_tvm as st

    compiled = st.load(args.artefact)
    inputs = _read_npz(args.inputs)
    outputs = compiled.run(inputs)
    named = {spec.name: value for spec, value in zip(compiled.outputs, outputs)}
    if args.outputs:

        def write(tmp: str) -> None:
            with open(tmp, "wb") as handle:  # a file object: savez would append ".npz" to a name
                np.savez(handle, **named)

        _write_atomically(Path(args.outputs), write)
    for name, value in named.items():
        print(
            f"{name}: shape {list(value.shape)} {value.dtype}  "
            f"mean {float(value.mean()):.6g}  max {float(value.max()):.6g}"
        )
    if args.repeat and args.repeat > 1:
        stats = compiled.benchmark(inputs, repeat=args.repeat)
        print(
            f"latency over {args.repeat} runs: median {stats['median'] * 1e3:.3f} ms, "
            f"min {stats['min'] * 1e3:.3f} ms, max {stats['max'] * 1e3:.3f} ms"
        )
    if args.profile:
        print(compiled.report)
        print()
        print(compiled.profile(inputs))
    return 0


def cmd_demo(args) -> int:
    from sparse_tvm.demo import run_demo

    return run_demo(quick=args.quick)


def cmd_prune(args) -> int:
    import onnx

    import sparse_tvm as st
    from sparse_tvm.training import print_progress

    exclude = [name for name in (args.exclude or "").split(",") if name]
    options: dict = {}
    if args.method != "magnitude":
        options = dict(
            data=args.data,
            eval_data=args.eval_data,
            epochs=args.epochs,
            lr=args.lr,
            distill=args.distill,
            seed=args.seed,
            optimizer=args.optimizer,
            batch_size=args.batch_size,
            callbacks=[print_progress],
        )
    elif args.data or args.eval_data:
        raise CLIError("--data and --eval-data are for fine-tuning: use --method gmp or l0")
    if args.target is not None:
        options["target"] = args.target
    if args.input_shapes is not None:
        options["input_shapes"] = _shapes(args.input_shapes)
    result = st.prune(
        args.model,
        args.sparsity,
        args.pattern,
        method=args.method,
        exclude=exclude,
        scope=args.scope,
        unstructured_below=args.unstructured_below,
        **options,
    )
    _write_atomically(Path(args.output), lambda tmp: onnx.save(result.model, tmp))
    print(result.report.to_json() if args.json else result.report)
    print(f"wrote {args.output}")
    return 0


def cmd_quantize(args) -> int:
    import onnx

    import sparse_tvm as st
    from sparse_tvm.frontend.load import load_onnx
    from sparse_tvm.quantization import quantized_weights

    exclude = [name for name in (args.exclude or "").split(",") if name]
    output = Path(args.output)
    model = load_onnx(args.model)
    _say(f"quantizing {args.model} on {args.data} ...")
    quantized = st.quantize(
        model,
        args.data,
        per_channel=args.per_channel,
        exclude=exclude,
        activations=args.activations,
    )
    _write_atomically(output, lambda tmp: onnx.save(quantized, tmp))
    weights = quantized_weights(model, quantized)
    zeros = sum(w.zeros for w in weights)
    size = sum(w.size for w in weights)
    scales = "per channel" if args.per_channel else "per tensor"
    print(
        f"quantized {len(weights)} layers to int8 weights ({scales}) and {args.activations} "
        f"activations; {zeros:,} of {size:,} weights are zero, all kept"
    )
    print(f"wrote {args.output}")
    return 0


def cmd_tune(args) -> int:
    import sparse_tvm as st

    summary = st.tune(
        args.model,
        args.target,
        args.records,
        trials=args.trials,
        timeout=args.timeout,
        rpc_tracker=args.rpc_tracker,
        rpc_key=args.rpc_key,
        input_shapes=_shapes(args.input_shapes),
        progress=_say,
        status=_progress.status,
    )
    _progress.finish()
    print(summary)
    return 0


# -- parser ----------------------------------------------------------------------------------
def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is outside [0, 1]")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sparse-tvm", description="Compile pruned neural networks into fast sparse code."
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show details, tracebacks, and the logs of TVM and MetaSchedule",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="prune, compile and compare the bundled example models")
    p.add_argument("--quick", action="store_true", help="smaller models (for a fast check)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("targets", help="list the target presets")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_targets)

    p = sub.add_parser("inspect", help="per-layer analysis of an ONNX model or an artefact")
    p.add_argument("model", help="MODEL.onnx, or a compiled .tar artefact")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--input-shapes", help="static shapes for dynamic inputs: name:1x128,...")
    p.add_argument(
        "--sparsity-threshold",
        type=_probability,
        help="layers whose weights are less sparse than this, in [0, 1], stay dense "
        "(default: the cost model decides)",
    )
    p.add_argument(
        "--report",
        metavar="REPORT.html",
        help="also write the report as a self-contained HTML page",
    )
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("compile", help="compile an ONNX model into an artefact")
    p.add_argument("model", help="MODEL.onnx")
    p.add_argument("--target", default="x86", help="preset name or TVM target JSON (default x86)")
    p.add_argument("-o", "--output", required=True, help="artefact to write (model.tar)")
    p.add_argument("--records", help="tuning records folder")
    p.add_argument(
        "--cross-compiler",
        help="C compiler that links the library (cross compiler for edge targets)",
    )
    p.add_argument(
        "--sparsity-threshold",
        type=_probability,
        help="layers whose weights are less sparse than this, in [0, 1], stay dense "
        "(default: the cost model and measurements decide)",
    )
    p.add_argument("--dense", action="store_true", help="compile every layer dense")
    p.add_argument("--input-shapes", help="static shapes for dynamic inputs: name:1x128,...")
    p.add_argument(
        "--no-measure",
        action="store_true",
        help="decide formats by the cost model alone (faster, less sure)",
    )
    p.add_argument(
        "--report",
        metavar="REPORT.html",
        help="also write the per-layer report as a self-contained HTML page",
    )
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("run", help="run a compiled artefact on inputs from an .npz file")
    p.add_argument("artefact", help="model.tar from `sparse-tvm compile`")
    p.add_argument("--inputs", required=True, help="IN.npz mapping input names to arrays")
    p.add_argument("--outputs", help="OUT.npz to write the outputs to")
    p.add_argument("--repeat", type=int, default=0, help="time this many runs")
    p.add_argument(
        "--profile",
        action="store_true",
        help="print the per-layer report (formats, latencies measured at compile time) and "
        "where a run's time goes, by operator (each kernel timed in the run)",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("prune", help="prune the weights of an ONNX model")
    p.add_argument("model", help="MODEL.onnx")
    p.add_argument("-o", "--output", required=True, help="PRUNED.onnx to write")
    p.add_argument(
        "--sparsity",
        type=_probability,
        required=True,
        help="fraction of each prunable weight set to zero, in [0, 1] (0.9: 90 %% zeros)",
    )
    p.add_argument(
        "--pattern",
        default="1x1",
        help="1x1, 4x1, 8x1, 16x1, 1x4, 16x4 (int8 on x86) (output x input blocks), N:M such as "
        "2:4, or auto: per layer the block its sparse kernel runs fastest in on --target",
    )
    p.add_argument("--target", help="for --pattern auto: the target preset or TVM target JSON")
    p.add_argument(
        "--input-shapes",
        help="for --pattern auto: static shapes for dynamic inputs: name:1x128,...",
    )
    p.add_argument(
        "--method",
        default="magnitude",
        choices=["magnitude", "gmp", "l0"],
        help="one-shot magnitude, or gradual magnitude / L0 with fine-tuning on --data",
    )
    p.add_argument(
        "--scope",
        default="layer",
        choices=["layer", "global"],
        help="magnitude ranking per layer or over all layers",
    )
    p.add_argument("--exclude", help="weights or layers to keep dense: name,name")
    p.add_argument(
        "--unstructured-below",
        type=int,
        default=SMALL_WEIGHT,
        metavar="N",
        help=f"a block pattern prunes weights of fewer than N elements 1x1 "
        f"(default {SMALL_WEIGHT}; 0: every weight in blocks)",
    )
    p.add_argument("--data", help="TRAIN.npz: the model inputs plus labels or targets")
    p.add_argument("--eval-data", help="VAL.npz to report accuracy (or loss) before and after")
    p.add_argument(
        "--epochs", type=int, help="fine-tuning epochs (default: about 1,500 steps of --data)"
    )
    p.add_argument(
        "--distill",
        type=_probability,
        default=0.5,
        help="with labels: the dense model's share of the targets, in [0, 1] (default 0.5)",
    )
    p.add_argument("--lr", type=float, help="learning rate (default: 0.05 SGD, 0.002 Adam)")
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser(
        "quantize", help="static int8 quantization (QDQ) of an ONNX model; zeros stay zero"
    )
    p.add_argument("model", help="MODEL.onnx (float32, pruned or not)")
    p.add_argument("-o", "--output", required=True, help="Q.onnx to write")
    p.add_argument(
        "--data",
        required=True,
        help="CALIB.npz: samples of the model's inputs (first axis counts samples)",
    )
    p.add_argument("--per-channel", action="store_true", help="one weight scale per output channel")
    p.add_argument("--exclude", help="weights or layers to keep in float32: name,name")
    p.add_argument(
        "--activations",
        default="uint8",
        choices=["uint8", "int8"],
        help="activation type (default uint8: what x86 VNNI multiplies int8 weights with)",
    )
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("tune", help="tune the sparse kernels of a model with MetaSchedule")
    p.add_argument("model", help="MODEL.onnx")
    p.add_argument("--target", default="x86", help="preset name or TVM target JSON (default x86)")
    p.add_argument("--records", required=True, help="folder for the tuning records")
    p.add_argument("--trials", type=int, default=64, help="measured trials per candidate kernel")
    p.add_argument("--timeout", type=float, help="seconds for the whole run")
    p.add_argument("--rpc-tracker", help="HOST:PORT of a TVM RPC tracker (remote measurement)")
    p.add_argument("--rpc-key", help="device key registered with the tracker")
    p.add_argument("--input-shapes", help="static shapes for dynamic inputs: name:1x128,...")
    p.set_defaults(func=cmd_tune)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from sparse_tvm.logs import is_verbose, verbosity

    try:
        # --verbose or SPARSE_TVM_VERBOSE=1; both the verbosity and the warning display are
        # the process's own again when the command returns
        with verbosity(True if args.verbose else None), warnings.catch_warnings():
            if not is_verbose():
                warnings.showwarning = _one_line_warning
            return args.func(args)
    except SparseTVMError as err:
        _progress.finish()
        if args.verbose or is_verbose():
            raise
        print(f"error: {err}", file=sys.stderr)
        return exit_status(err)
    except KeyboardInterrupt as err:
        _progress.finish()
        print("error: interrupted", file=sys.stderr)
        return exit_status(err)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
