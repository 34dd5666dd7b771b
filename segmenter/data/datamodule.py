"""LightningDataModule over any corpus (``segmenter.data.corpora.Corpus``: an object with
``load() -> {split: [Document]}``, ``task`` and ``label_names``): stores the corpus as
memory-mapped Arrow shards (segmenter/data/store.py) and serves its documents from there one
at a time, windows long training documents (an index of (document, start, end), not copies),
writes the split file, and batches documents. Units become tensors in the
loaders' collate, by the network's featurizer (segmenter.features), so with
``num_workers > 0`` in the worker processes, not on the training process."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from lightning import LightningDataModule
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import Dataset, DistributedSampler
from torchdata.stateful_dataloader import StatefulDataLoader

from segmenter.core.bounds import Number
from segmenter.core.document import DEFAULT_UNITS, IGNORE, Document, boundary_slots
from segmenter.core.windows import check_window
from segmenter.data.corpora import Corpus
from segmenter.data.store import (
    DocumentStore,
    StoredDocuments,
    build_store,
    key_hash,
    store_key,
    temporary_root,
    training_windows,
)
from segmenter.features import Featurizer

# The settings' bounds (segmenter.core.bounds; the command line checks data.* with them too).
BATCH_SIZE = Number(lo=1)
NUM_WORKERS = Number(lo=0)
MAX_UNITS = Number(lo=2, none=True)  # a training window holds a boundary slot; null: whole documents

log = logging.getLogger(__name__)


class DocumentDataset(Dataset):
    def __init__(self, docs: list[Document]) -> None:
        self.docs = docs

    def __len__(self) -> int:
        return len(self.docs)

    def __getitem__(self, i: int) -> Document:
        return self.docs[i]


class Collate:
    """Documents -> batch dict: the featurized units, labels and positions (picklable: it
    runs in the DataLoader's workers)."""

    def __init__(self, task: str, featurizer: Featurizer) -> None:
        self.task, self.featurizer = task, featurizer

    def __call__(self, docs: list[Document]) -> dict[str, Any]:
        t = max(len(d) for d in docs)
        labels = torch.full((len(docs), t), IGNORE, dtype=torch.long)
        boundaries = torch.zeros(len(docs), t)
        for i, d in enumerate(docs):
            labels[i, : len(d)] = torch.tensor(d.labels)
            if len(d):
                boundaries[i, : len(d) - 1] = boundary_slots(labels[i, : len(d)], self.task)  # the last unit stays 0
        return {
            "ids": [d.id for d in docs],
            "features": self.featurizer.collate([self.featurizer(d.units) for d in docs]),
            "subsets": [d.subset for d in docs],  # what evaluation reports apart
            "labels": labels,  # (B, T), IGNORE at padding
            "boundaries": boundaries,  # (B, T) gold 0/1 segment ends
            # (B,) position of each input's first unit in its document: a training window
            # keeps its positions, as windows do at inference (segmenter/inference/api.py)
            "start": torch.tensor([d.meta.get("window", (0, 0))[0] for d in docs]),
        }


class EpochShuffle(DistributedSampler):
    """The training shuffle: a permutation of (seed, epoch), the epoch read from the trainer
    (``epoch()``) when the first index is drawn. A loader resumed from a checkpoint starts
    iterating before Lightning calls ``set_epoch``; a generator waits until the trainer's
    epoch is restored. No global random state is drawn, so a resumed run's dropout matches."""

    def __init__(self, dataset: Dataset, *, epoch: Callable[[], int], **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self.current_epoch = epoch

    def __iter__(self) -> Iterator[int]:
        self.set_epoch(self.current_epoch())
        yield from super().__iter__()


class SegmentationDataModule(LightningDataModule):
    def __init__(
        self,
        *,
        corpus: Corpus,
        batch_size: int = 16,
        num_workers: int = 0,
        pin_memory: bool = False,
        max_units: int | None = None,
        overlap: int = 0,
        split_file: str | None = None,
        featurizer: Featurizer | None = None,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        """``max_units``: training documents longer than this are cut into windows sharing
        ``overlap`` units (val/test stay whole; inference stitches windows back).
        ``split_file``: where to write the document ids of each split (the run folder), so an
        evaluation can check it runs on exactly the test documents. ``featurizer``: what
        turns units into the network's tensors (``Featurizer.for_net(net)``); it can be
        given once the network is built, as ``datamodule.featurizer = ...``.
        ``cache_dir``: where the corpus is stored as memory-mapped Arrow shards
        (``<cache_dir>/corpora/<key>``, segmenter/data/store.py), built on the first run;
        None: a temporary folder, built every run."""
        super().__init__()
        BATCH_SIZE.check("batch_size", batch_size)
        NUM_WORKERS.check("num_workers", num_workers)
        MAX_UNITS.check("max_units", max_units)
        if max_units is not None:
            check_window(max_units, overlap, size_name="max_units")
        self.corpus = corpus
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.max_units, self.overlap, self.split_file = max_units, overlap, split_file
        self.featurizer = featurizer
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.store: DocumentStore | None = None
        self.splits: dict[str, StoredDocuments] | None = None  # each a Sequence of Documents, read from disk
        self.train_windows: StoredDocuments | None = None
        self._tmp = None  # the temporary folder of a store that is not cached

    # -- data -------------------------------------------------------------------------
    def store_dir(self) -> Path:
        """The corpus's store: under ``cache_dir`` by its key, else in a temporary folder."""
        key = store_key(self.corpus)
        if self.cache_dir is not None and key is not None:
            return self.cache_dir / "corpora" / key_hash(key)
        if key is None:
            log.info("%s has no cache_key(): its store is rebuilt every run", type(self.corpus).__name__)
        if self._tmp is None:
            self._tmp = temporary_root()
        return Path(self._tmp.name) / "corpus"

    def prepare_data(self) -> None:
        # Corpora that build and cache (the built-in one) do it here, on one process, and
        # the corpus is stored as Arrow shards (once; later runs find it).
        prepare = getattr(self.corpus, "prepare", None)
        if prepare is not None:
            prepare()
        build_store(self.corpus, self.store_dir())

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:
            return
        if self.store is None:
            self.store = DocumentStore(build_store(self.corpus, self.store_dir()))
        for split, stats in self.store.stats.items():
            if not stats["docs"]:
                raise ValueError(f"split {split!r} of {type(self.corpus).__name__} is empty")
        self.splits = {split: StoredDocuments(self.store, rows) for split, rows in self.store.rows.items()}
        if self.max_units is not None:
            windows = training_windows(
                self.store.lengths, self.store.rows["train"], size=self.max_units, overlap=self.overlap
            )
            self.train_windows = StoredDocuments(self.store, self.store.rows["train"], windows=windows)
        log.info("data (%s):\n%s", self.store.dir, self.summary())
        if self.split_file:
            log.info("split file: %s", self.store.copy_manifest(self.split_file))

    def documents(self, split: str) -> StoredDocuments:
        """One split's documents, in split order, each read from the store when iterated
        (evaluation: the split is never held, and no training windows are cut). Prepares the
        store first where no run has."""
        if self.store is None:
            self.prepare_data()
            self.store = DocumentStore(build_store(self.corpus, self.store_dir()))
        if split not in self.store.rows:
            raise ValueError(f"split={split!r} is not one of {sorted(self.store.rows)}")
        return StoredDocuments(self.store, self.store.rows[split])

    @property
    def task(self) -> str:
        return self.corpus.task

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(self.corpus.label_names)

    @property
    def units(self) -> str:
        """What the corpus's units are (sentences | lines): a corpus that does not say has
        sentences, as every corpus had before corpora said."""
        return getattr(self.corpus, "units", DEFAULT_UNITS)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def all_units(self) -> Iterator[str]:
        """Every unit of every split, in order, read from the store one document at a time
        (for encoders that precompute and cache: a corpus's units are never held at once)."""
        self.setup()
        for rows in self.store.rows.values():
            for units in self.store.units(rows):
                yield from units

    def subsets(self) -> dict[str, list[str]]:
        """{"val": [...], "test": [...]}: the subsets of each evaluation split (each corpus of a
        mixture, Choi's folders: what evaluation reports apart), where it has more than one."""
        self.setup()
        found = {split: self.store.stats[split]["subsets"] for split in ("val", "test")}
        return {split: names for split, names in found.items() if len(names) > 1}

    def class_counts(self) -> list[int]:
        """Units per class in the training split (for loss weighting)."""
        self.setup()
        return list(self.store.stats["train"]["label_counts"])

    def summary(self) -> str:
        """One line per split: documents, units, segments, label distribution."""
        lines = []
        for split, stats in (self.store.stats if self.store is not None else {}).items():
            units, counts = stats["units"], stats["label_counts"]
            dist = ", ".join(f"{name} {counts[k] / max(units, 1):.1%}" for k, name in enumerate(self.label_names))
            line = f"  {split:5s}: {stats['docs']} docs, {units} units, {stats['segments']} segments; labels: {dist}"
            if split == "train" and self.train_windows is not None:
                line += f"; {len(self.train_windows)} training windows of <= {self.max_units} units"
            lines.append(line)
        return "\n".join(lines)

    # -- loaders ----------------------------------------------------------------------
    def _loader(self, split: str, shuffle: bool) -> StatefulDataLoader:
        # Stateful (torchdata): Lightning stores the loader's position in every checkpoint,
        # so a run resumed mid-epoch continues that epoch.
        self.setup()
        if self.featurizer is None:
            raise ValueError(
                "the datamodule has no featurizer: set datamodule.featurizer = Featurizer.for_net(net) first"
            )
        dataset = self.train_windows if split == "train" and self.train_windows is not None else self.splits[split]
        return StatefulDataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=self._train_sampler(dataset) if shuffle else self._eval_sampler(dataset),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            collate_fn=Collate(self.task, self.featurizer),
            persistent_workers=self.num_workers > 0,
            # The workers' seeds from a generator of the loader's own: a loader made on resume
            # draws nothing from the global random state.
            generator=torch.Generator().manual_seed(torch.initial_seed()),
        )

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (getattr(trainer, "world_size", 1), getattr(trainer, "global_rank", 0)) if trainer else (1, 0)

    def _train_sampler(self, dataset: Dataset) -> EpochShuffle:
        """Each process its share under DDP (Lightning leaves a DistributedSampler it is
        given alone), seeded by the run's seed."""
        world, rank = self._world()
        return EpochShuffle(
            dataset,
            epoch=lambda: self.trainer.current_epoch if self.trainer is not None else 0,
            num_replicas=world,
            rank=rank,
            shuffle=True,
            seed=torch.initial_seed() % 2**32,
        )

    def _eval_sampler(self, dataset: Dataset) -> UnrepeatedDistributedSampler | None:
        """Under DDP, each validation/test document on exactly one process. Lightning's
        own DistributedSampler pads the last batch with repeated documents, which would
        count them twice in the metrics; it leaves a DistributedSampler it is given alone."""
        world, rank = self._world()
        if world <= 1:
            return None
        return UnrepeatedDistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False)

    def train_dataloader(self) -> StatefulDataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> StatefulDataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> StatefulDataLoader:
        return self._loader("test", shuffle=False)
