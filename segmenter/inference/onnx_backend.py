"""The network as an ONNX graph, run by onnxruntime: the API's second backend.

    from segmenter import Segmenter
    seg = Segmenter.from_pretrained("topic", backend="onnx")            # exported once, then cached
    seg = Segmenter.from_checkpoint(ckpt, backend="onnx", onnx_path="model.onnx")

What the graph holds: everything between the featurizer and the logits (``SegmenterNet``'s
forward: encoder projections, cohesion and self-similarity views, the attention blocks, the
head), with dynamic batch and length axes. Its inputs are the featurizer's tensors by name
(``mask``, ``hashed_ids``, ``minilm_vectors``, ...) plus ``start``, each window's position in
its document; its output is ``logits`` (B, T, C). What stays outside, in torch as for the
torch backend: the featurizer (text -> tensors), windowing and stitching, the CRF's decoding
and marginals (a Viterbi recursion and autograd marginals over the stitched document),
calibration and the decisions.

What the backend needs to rebuild that rest travels inside the .onnx file, as its
``metadata_props`` entry ``"segmenter"`` (JSON): the checkpoint's "segmenter" entry (the
network's parts by registered name, task, label names, calibration), the featurizer's
settings, the CRF's weights, the digest of the weights it was exported from, and the
``max_units``/``overlap`` it is meant to run with. One file, not a sidecar: it cannot be
copied without its settings or paired with another model's, and onnxruntime reads it
without parsing the graph twice (``InferenceSession.get_modelmeta()``). It is plain data,
checked as a checkpoint's is: the featurizer is rebuilt from registered parts only
(``segmenter.inference.checkpoint.build_net``), and an ONNX graph itself runs no Python.

Export uses ``torch.onnx.export`` (the torch.export-based exporter) on CPU code paths:
SDPA (self, boundary-aware mean) traces as it is; localized attention's blocked kernel and the
segment bias's query blocks would tie the graph to one length, so under export they run an
equivalent form (``torch.onnx.is_in_onnx_export``, segmenter.models.attention); FlexAttention
is CUDA-only and never chosen on CPU. Before the file is written, the graph is run by
onnxruntime on example batches (one of a single unit) and compared with torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import segmenter
from segmenter.core.io import atomic_file
from segmenter.features.featurizer import MASK, Featurizer
from segmenter.inference import calibration
from segmenter.inference.checkpoint import CheckpointError, build_net, check_plain, weights_digest
from segmenter.models.net import LabelDecoding, NetOutput

log = logging.getLogger(__name__)

KEY = "segmenter"  # the metadata_props entry this module writes
FORMAT_VERSION = 1  # of that entry; bump when it changes
START, LOGITS = "start", "logits"  # the graph's own input and its output
BACKENDS = ("torch", "onnx")
# Largest |logit difference| between onnxruntime and torch on the export's example batches that
# an export accepts (observed: about 1e-6 in float32).
EXPORT_TOLERANCE = 1e-3
# Units of the example documents the graph is traced with: distinct lengths (and so distinct
# sizes on every axis), none 0 or 1, which torch.export would take for constants.
EXAMPLE_LENGTHS = (29, 17, 23)
CHECK_LENGTHS = (2, 70, 1)  # the graph is checked on these too: shorter and longer, one unit
REGISTRY_LOGGER = "torch.onnx._internal.exporter._registration"  # where torch.onnx says which ops it skips
INSTALL = "pip install -e '.[onnx]'"


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError(f"the ONNX backend needs onnxruntime: {INSTALL} ({e.name} is not installed)") from None
    return onnxruntime


# ----------------------------------------------------------------------------- export


class _Graph(nn.Module):
    """``SegmenterNet`` with positional tensors in and logits out: an ONNX graph has named
    inputs, not a dict. ``keys``: the featurizer's tensors in input order."""

    def __init__(self, net: nn.Module, keys: Sequence[str]) -> None:
        super().__init__()
        self.net, self.keys = net, tuple(keys)

    def forward(self, start: Tensor, *features: Tensor) -> Tensor:
        return self.net(dict(zip(self.keys, features)), start=start).logits  # (B, T, C)


def example_documents(lengths: Sequence[int] = EXAMPLE_LENGTHS, *, seed: int = 0) -> list[list[str]]:
    """Documents of made-up sentences to trace the network with (what they say does not
    matter: the network has no data-dependent branch)."""
    rng = random.Random(seed)
    words = "the a river bank stock rate cat mat rain cloud song line verse chorus road train".split()
    return [[" ".join(rng.choices(words, k=rng.randint(3, 9))) + "." for _ in range(n)] for n in lengths]


def export(
    net: nn.Module,
    path: str | os.PathLike,
    *,
    meta: Mapping[str, Any],
    max_units: int = 512,
    overlap: int = 64,
    featurizer: Featurizer | None = None,
) -> Path:
    """Write ``net`` (a ``SegmenterNet`` on the CPU, as ``load_net`` gives it) to ``path`` as
    ONNX, with ``meta`` (its checkpoint's "segmenter" entry) and what else the backend needs
    in the file's metadata; checked against torch on example batches before it is kept.
    ``max_units``/``overlap``: the windowing stored with it (``Segmenter.from_onnx``'s)."""
    import onnx
    import onnxscript  # noqa: F401 -- the exporter's ONNX functions; fail here, with the install command

    path = Path(path)
    net = net.cpu().eval()
    featurizer = featurizer or Featurizer.for_net(net)
    feats = featurizer.batch(example_documents())
    keys = [MASK, *sorted(k for k in feats if k != MASK)]
    start = torch.tensor([0, 100, 7])  # (B,) windows anywhere in their documents
    args = (start, *(feats[k] for k in keys))
    batch_axis, units_axis = torch.export.Dim("batch"), torch.export.Dim("units")
    # mask is (B, T) by definition; every other axis is left for torch.export to relate to
    # those (a padded feature's first two) or to find constant (a feature width).
    other = [tuple(torch.export.Dim.AUTO for _ in feats[k].shape) for k in keys[1:]]
    dynamic = {"start": (batch_axis,), "features": ((batch_axis, units_axis), *other)}
    graph = _Graph(net, keys).eval()
    # The exporter's optimizer logs every constant it merges (INFO), its registry every
    # torchvision op it skips (WARNING); torch names the axes itself where inputs share one.
    quiet = _quiet(logging.WARNING, "onnx_ir", "onnxscript"), _quiet(logging.ERROR, REGISTRY_LOGGER)
    with torch.no_grad(), warnings.catch_warnings(), quiet[0], quiet[1]:
        warnings.filterwarnings("ignore", message="# The axis name")
        warnings.filterwarnings("ignore", message=".*LeafSpec", category=FutureWarning)
        expected = graph(*args)  # (B, T, C)
        program = torch.onnx.export(
            graph,
            args,
            dynamic_shapes=dynamic,
            dynamo=True,
            input_names=[START, *keys],
            output_names=[LOGITS],
            verbose=False,
        )
    model = program.model_proto
    _check_axes(model)
    entry = {
        "format_version": FORMAT_VERSION,
        "segmenter_version": segmenter.__version__,
        "torch_version": torch.__version__,
        "checkpoint": copy_plain(meta),
        "featurizer": featurizer.config(),
        "crf": None if net.crf is None else {k: v.tolist() for k, v in net.crf.state_dict().items()},
        "weights_sha256": weights_digest(net.state_dict()),
        "inputs": [START, *keys],
        "max_units": int(max_units),
        "overlap": int(overlap),
    }
    check_plain(entry, KEY)
    onnx.helper.set_model_props(model, {KEY: json.dumps(entry)})
    data = model.SerializeToString()
    # The graph against torch on the example batch and on batches of other sizes (a graph
    # tied to the example's sizes fails or differs there).
    session = _session(data, threads=torch.get_num_threads())
    diff = 0.0
    checks = [(None, start), (example_documents(CHECK_LENGTHS, seed=1), torch.tensor([3, 0, 50]))]
    checks.append((example_documents((1,), seed=2), torch.tensor([9])))  # B = T = 1
    for docs, starts in checks:
        batch = feats if docs is None else featurizer.batch(docs)
        with torch.no_grad():
            want = expected if docs is None else graph(starts, *(batch[k] for k in keys))
        got = session.run([LOGITS], {START: starts.numpy(), **{k: batch[k].numpy() for k in keys}})[0]
        diff = max(diff, float((torch.from_numpy(got) - want)[batch[MASK]].abs().max()))
    if not diff <= EXPORT_TOLERANCE:
        raise RuntimeError(
            f"the exported graph's logits differ from torch's by up to {diff:.3g} (> {EXPORT_TOLERANCE}) on the "
            f"example batches: not writing {path}"
        )
    with atomic_file(path, "wb") as f:
        f.write(data)
    log.info("exported %s (%.1f MB; onnxruntime vs torch: max |logit difference| %.2g)", path, len(data) / 1e6, diff)
    return path


@contextlib.contextmanager
def _quiet(level: int, *loggers: str) -> Iterator[None]:
    """These loggers at ``level`` at least while the block runs, their levels restored after."""
    saved = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(max(saved[name], level))
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def copy_plain(meta: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's "segmenter" entry as JSON-able plain data (a deep copy)."""
    return json.loads(json.dumps(dict(meta)))


def _check_axes(model: Any) -> None:
    """The graph must take any batch size and length: torch.export turns an axis into a
    constant when the code branches on it, which would break on other inputs."""
    for value in [*model.graph.input, *model.graph.output]:
        if value.name in (MASK, LOGITS):
            dims = value.type.tensor_type.shape.dim[:2]
            if any(not d.dim_param for d in dims):
                raise RuntimeError(
                    f"the exported graph's {value.name} has fixed axes {[d.dim_value for d in dims]}: "
                    "the network branches on the batch size or the length somewhere"
                )


def _session(model: bytes | str | os.PathLike, *, threads: int):
    ort = _onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # as many as torch is given (conf threads=, the server's)
    options.inter_op_num_threads = 1
    return ort.InferenceSession(
        model if isinstance(model, bytes) else str(model), sess_options=options, providers=["CPUExecutionProvider"]
    )


# ----------------------------------------------------------------------------- the backend


class OnnxNet(LabelDecoding):
    """The network run by onnxruntime, in the role the API gives a ``SegmenterNet``:
    ``onnx_net(feats, start=...)`` -> ``NetOutput`` (logits only: the boundary predictor's
    scores serve training), ``num_classes``, ``decode``/``unit_probs`` (its CRF, in torch),
    ``unit_features`` (so ``Featurizer.for_net`` gives it its featurizer). CPU only."""

    backend = "onnx"

    def __init__(self, *, session: Any, entry: Mapping[str, Any], cache_dir: str | None = None) -> None:
        self.session, self.entry, self.cache_dir = session, dict(entry), cache_dir
        self.net_config = self.entry["checkpoint"]["net"]
        self.num_classes = int(self.net_config["num_classes"])
        self.inputs = [i.name for i in session.get_inputs()]
        skeleton = self._skeleton()  # the network's parts, registered ones only, untrained
        rebuilt = Featurizer.for_net(skeleton).config()
        if rebuilt != self.entry["featurizer"]:
            raise CheckpointError(
                f"the ONNX graph was exported for features {self.entry['featurizer']}, but this version of segmenter "
                f"would give it {rebuilt}: export it again"
            )
        self.crf = skeleton.crf
        if self.crf is not None:
            try:
                self.crf.load_state_dict({k: torch.tensor(v) for k, v in (self.entry["crf"] or {}).items()})
            except (RuntimeError, TypeError, ValueError) as e:
                raise CheckpointError(f"the ONNX metadata's CRF weights do not fit its network: {e}") from None

    @classmethod
    def load(cls, path: str | os.PathLike, *, cache_dir: str | None = None, threads: int | None = None) -> OnnxNet:
        """An exported graph (``export``). ``cache_dir``: where a MiniLM featurizer caches
        vectors (None: memory only). ``threads``: onnxruntime's (None: torch's number)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {path}")
        session = _session(path, threads=threads or torch.get_num_threads())
        return cls(session=session, entry=read_entry(session, path), cache_dir=cache_dir)

    def settings(self) -> dict[str, Any]:
        """The rest of a ``Segmenter`` the file holds: task, label names, calibration, and the
        max_units/overlap it was exported with."""
        ckpt = self.entry["checkpoint"]
        return {
            "task": ckpt["task"],
            "label_names": ckpt["label_names"],
            "calibration": calibration.read(ckpt),
            "max_units": self.entry["max_units"],
            "overlap": self.entry["overlap"],
        }

    def _skeleton(self) -> nn.Module:
        return build_net(self.net_config, where="onnx metadata: net", cache_dir=self.cache_dir)

    @property
    def structure(self) -> nn.Module:
        """The network's parts as the file names them, untrained: what describes the model
        (the server's model card), never what runs it."""
        return self._skeleton()

    def unit_features(self, **settings: Any) -> list:
        """What the exported network reads (``Featurizer.for_net``): its parts declare it."""
        return Featurizer.for_net(self._skeleton(), **settings).features

    def __call__(self, feats: Mapping[str, Tensor], *, start: Tensor | None = None) -> NetOutput:
        mask = feats[MASK]  # (B, T)
        if start is None:
            start = torch.zeros(mask.shape[0], dtype=torch.long)
        given = {START: start, **feats}
        missing = [k for k in self.inputs if k not in given]
        if missing:
            raise ValueError(f"the ONNX graph needs inputs {missing}, which the batch lacks (keys: {sorted(feats)})")
        (logits,) = self.session.run([LOGITS], {k: given[k].cpu().numpy() for k in self.inputs})
        return NetOutput(torch.from_numpy(logits), mask, None)  # (B, T, C)

    def to(self, device: str | torch.device) -> OnnxNet:
        if torch.device(device).type != "cpu":
            raise ValueError(f"the ONNX backend runs on the CPU (onnxruntime's CPU provider); got device={device}")
        return self

    def eval(self) -> OnnxNet:
        return self


def read_entry(session: Any, path: str | os.PathLike) -> dict[str, Any]:
    """The "segmenter" metadata of an exported graph, checked (CheckpointError saying what is wrong)."""
    props = session.get_modelmeta().custom_metadata_map
    if KEY not in props:
        raise CheckpointError(f"{path}: no '{KEY}' metadata: not an ONNX graph exported by segmenter")
    try:
        entry = json.loads(props[KEY])
        check_plain(entry, KEY)
    except ValueError as e:
        raise CheckpointError(f"{path}: unreadable '{KEY}' metadata: {e}") from None
    if not isinstance(entry, dict) or entry.get("format_version") != FORMAT_VERSION:
        version = entry.get("format_version") if isinstance(entry, dict) else None
        raise CheckpointError(
            f"{path}: ONNX metadata format {version!r}; this segmenter {segmenter.__version__} reads "
            f"{FORMAT_VERSION}: export it again"
        )
    for key in ("checkpoint", "featurizer", "crf", "weights_sha256", "max_units", "overlap"):
        if key not in entry:
            raise CheckpointError(f"{path}: '{KEY}' metadata lacks {key!r}")
    for key in ("net", "task", "label_names"):
        if not isinstance(entry["checkpoint"], dict) or key not in entry["checkpoint"]:
            raise CheckpointError(f"{path}: '{KEY}' metadata lacks the checkpoint's {key!r}")
    return entry


# ----------------------------------------------------------------------------- the API's choice


def default_cache_dir() -> Path:
    """Where graphs exported on the fly are kept: $SEGMENTER_CACHE/onnx, else
    $XDG_CACHE_HOME/segmenter/onnx (~/.cache/segmenter/onnx)."""
    if os.environ.get("SEGMENTER_CACHE"):
        return Path(os.environ["SEGMENTER_CACHE"]) / "onnx"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "segmenter" / "onnx"


def cache_key(net: nn.Module, meta: Mapping[str, Any]) -> str:
    """Names a network's graph in the cache: its weights, its parts, and the versions that
    export it (a new exporter writes a new file)."""
    identity = {
        "weights_sha256": weights_digest(net.state_dict()),
        "net": meta["net"],
        "segmenter": segmenter.__version__,
        "torch": torch.__version__,
        "format_version": FORMAT_VERSION,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def backend_net(
    backend: str,
    net: nn.Module,
    meta: Mapping[str, Any],
    *,
    onnx_path: str | os.PathLike | None = None,
    cache_dir: str | None = None,
) -> Any:
    """What runs the network for ``Segmenter``: ``"torch"``: ``net`` itself; ``"onnx"``: an
    ``OnnxNet`` of ``onnx_path`` if that file exists (it must come from these weights), else
    of ``net`` exported there first (``onnx_path`` None: into ``default_cache_dir()``, named by
    ``cache_key``, reused by later calls). ``cache_dir``: a MiniLM featurizer's, as for ``load_net``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {BACKENDS}")
    if backend == "torch":
        if onnx_path is not None:
            raise ValueError(f"onnx_path={onnx_path} is for backend='onnx', not backend='torch'")
        return net
    path = Path(onnx_path) if onnx_path is not None else default_cache_dir() / f"{cache_key(net, meta)}.onnx"
    if not path.is_file():
        export(net, path, meta=meta)
    onnx_net = OnnxNet.load(path, cache_dir=cache_dir)
    expected = weights_digest(net.state_dict())
    if onnx_net.entry["weights_sha256"] != expected:
        raise CheckpointError(
            f"{path} was exported from other weights (digest {onnx_net.entry['weights_sha256'][:16]}...) than the "
            f"checkpoint's ({expected[:16]}...): export this checkpoint (scripts/export.py) or leave onnx_path out"
        )
    return onnx_net
