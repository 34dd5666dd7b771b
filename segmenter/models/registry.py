"""The parts a checkpoint may name, by registered name.

A checkpoint's network entry names every part by the name it is registered under here,
with its keyword arguments (``{"type": "localized", "dim": 128, ...}``), never by a class
path: moving a class to another module changes one import below, not the format.

Each part declares beside its name how it is built (``partial``: the network calls it
once per layer, as attention and the CRF are) and the bound of each of its size arguments
(the ``Number`` its module declares and its constructor checks: segmenter.core.bounds), so
loading a stranger's file cannot allocate terabytes.

A package that adds its own part (a fourth attention type, say) registers it under the
``segmenter.parts`` entry-point group of its own ``pyproject.toml``::

    [project.entry-points."segmenter.parts"]
    mean_pool = "my_package.attention:MEAN_POOL"   # a Part, or the class itself

Built-in names cannot be taken by a plugin. Nothing here is mutable: the table is read-only
and installed plugins are looked up each time (a checkpoint is saved or loaded rarely).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from torch import nn

from segmenter.core.bounds import Number
from segmenter.models import attention, encoder, minilm, net, static
from segmenter.models.attention import BoundaryAwareAttention, LocalizedAttention, SelfAttention
from segmenter.models.crf import LinearChainCRF
from segmenter.models.encoder import HashedNgramEncoder
from segmenter.models.minilm import HybridEncoder, MiniLMEncoder
from segmenter.models.net import CohesionProfile, SegmenterNet, SelfSimilarity
from segmenter.models.static import StaticEncoder

ENTRY_POINTS = "segmenter.parts"


@dataclass(frozen=True)
class Part:
    """One buildable part: its class, how it is built, and the bounds on its sizes."""

    cls: type[nn.Module]
    partial: bool = False  # built as functools.partial(cls, **kwargs): the network makes one per layer
    # The bound of each size argument (a list argument: each element): the part's module's own
    # declared bound (segmenter.core.bounds.Number), the one its constructor and the command
    # line check; an int n: a whole number from 0 to n. Upper ends ten to a hundred times the
    # sizes this project uses.
    limits: Mapping[str, Number | int] = field(default_factory=dict)
    # Arguments naming places on disk: set by the loading side, never taken from a file.
    paths: tuple[str, ...] = ()
    # Arguments since removed (REMOVED says why), each with the value that meant "off": a
    # checkpoint giving that value still loads (the argument is dropped), any other is refused.
    removed: Mapping[str, object] = field(default_factory=dict)


# Parts and arguments removed because measuring them showed no gain (docs/pretrained.md,
# "Removed options"). A checkpoint that used one is refused with this reason: built without
# it, the network would compute something other than what it was trained to.
_NO_GAIN = "no gain on held-out Wikipedia (docs/pretrained.md#removed-options); the last commit with it is 7924c84"
REMOVED: Mapping[str, str] = MappingProxyType(
    {
        "lead_words": f"LeadWords (embeddings of each unit's first words) was removed: {_NO_GAIN}",
        "segmenter_net.lead": f"the network's lead (LeadWords, each unit's first words) was removed: {_NO_GAIN}",
        "cohesion_profile.relative": f"CohesionProfile(relative=True) (cohesion standardised per document) was removed: {_NO_GAIN}",
    }
)


_DIM = {"dim": net.DIM}
_HEADS = {**_DIM, "num_heads": attention.NUM_HEADS}
BUILTIN: Mapping[str, Part] = MappingProxyType(
    {
        "segmenter_net": Part(
            SegmenterNet,
            limits={**_DIM, "num_layers": net.NUM_LAYERS, "ff_dim": net.FF_DIM, "num_classes": net.NUM_CLASSES},
            removed={"lead": None},
        ),
        "hashed": Part(
            HashedNgramEncoder,
            limits={
                **_DIM,
                "num_buckets": encoder.NUM_BUCKETS,
                "code_dim": encoder.CODE_DIM,
                "char_ngram": encoder.CHAR_NGRAM,
            },
        ),
        "minilm": Part(
            MiniLMEncoder,
            limits={**_DIM, "batch_size": minilm.BATCH_SIZE, "max_seq_length": minilm.MAX_SEQ_LENGTH},
            paths=("cache_dir",),
        ),
        "hybrid": Part(HybridEncoder, limits=_DIM),
        "static": Part(StaticEncoder, limits={**_DIM, "max_length": static.MAX_LENGTH}),
        "self": Part(SelfAttention, partial=True, limits=_HEADS),
        "localized": Part(
            LocalizedAttention,
            partial=True,
            limits={**_HEADS, "window_size": attention.WINDOW_SIZE, "block_size": attention.BLOCK_SIZE},
        ),
        "boundary_aware": Part(
            BoundaryAwareAttention,
            partial=True,
            limits={**_HEADS, "predictor_hidden": attention.PREDICTOR_HIDDEN, "query_block": attention.QUERY_BLOCK},
        ),
        "cohesion_profile": Part(
            CohesionProfile, limits={**_DIM, "radius": net.REACH, "blocks": net.REACH}, removed={"relative": False}
        ),
        "self_similarity": Part(
            SelfSimilarity,
            limits={
                **_DIM,
                "stripe": net.STRIPE,
                "surface_ngram": net.SURFACE_NGRAM,
                "surface_buckets": net.SURFACE_BUCKETS,
            },
        ),
        "linear_chain_crf": Part(LinearChainCRF, partial=True, limits={"num_classes": net.NUM_CLASSES}),
    }
)


def _plugins() -> Iterator[tuple[str, Part]]:
    for ep in importlib.metadata.entry_points(group=ENTRY_POINTS):
        if ep.name in BUILTIN:
            raise ValueError(f"entry point {ep.name}={ep.value} ({ENTRY_POINTS}) takes a built-in part's name")
        obj = ep.load()
        if isinstance(obj, Part):
            yield ep.name, obj
        elif isinstance(obj, type) and issubclass(obj, nn.Module):
            yield ep.name, Part(obj)
        else:
            raise ValueError(
                f"entry point {ep.name}={ep.value} ({ENTRY_POINTS}) is neither a Part nor an nn.Module class"
            )


def get(name: str) -> Part:
    """The part registered as ``name``; KeyError saying which names exist (or why a removed one went)."""
    if name in BUILTIN:
        return BUILTIN[name]
    if name in REMOVED:
        raise KeyError(f"no part is registered as {name!r}: {REMOVED[name]}")
    for found, part in _plugins():
        if found == name:
            return part
    raise KeyError(f"no part is registered as {name!r}; registered: {sorted(names())}")


def name_of(cls: type) -> str:
    """The name ``cls`` itself is registered under (its subclasses are not); KeyError otherwise."""
    for name, part in [*BUILTIN.items(), *_plugins()]:
        if part.cls is cls:
            return name
    raise KeyError(
        f"{cls.__module__}.{cls.__qualname__} is not a registered part, so a checkpoint could not say how to "
        f"rebuild it: register it under the {ENTRY_POINTS!r} entry-point group of its package (segmenter.models.registry)"
    )


def names() -> list[str]:
    return [*BUILTIN, *(name for name, _ in _plugins())]
