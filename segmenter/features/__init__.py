"""Text becomes tensors here, before the network: ``Featurizer`` turns a document's units
into the tensors its network's modules read (hashed feature ids, surface recurrence
features, frozen and static sentence vectors, word pieces). It is plain, picklable Python
that runs in a DataLoader's collate (so in its workers) for training, and through the same
code for predict, evaluate and serve; the ``nn.Module``s take tensors only."""

from segmenter.features.featurizer import (
    Featurizer,
    FrozenVectors,
    HashedBags,
    StaticVectors,
    SurfaceRecurrence,
    UnitFeature,
    WordPieces,
)

__all__ = [
    "Featurizer",
    "FrozenVectors",
    "HashedBags",
    "StaticVectors",
    "SurfaceRecurrence",
    "UnitFeature",
    "WordPieces",
]
