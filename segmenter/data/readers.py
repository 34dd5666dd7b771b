"""Old import paths (segmenter 0.1.0 before the restructure): file formats now live in
segmenter/data/formats.py, corpora in segmenter/data/corpora.py. Kept because the run
configs saved by training (<run>/.hydra/config.yaml, which scripts/evaluate.py reads)
name ``segmenter.data.readers.<Corpus>`` as ``data.corpus._target_``."""

from segmenter.data.corpora import ChoiCorpus, FileCorpus, JsonlCorpus, SeparatorCorpus
from segmenter.data.formats import ReaderError, list_files, read_jsonl, read_separator_files

__all__ = [
    "ChoiCorpus",
    "FileCorpus",
    "JsonlCorpus",
    "SeparatorCorpus",
    "ReaderError",
    "list_files",
    "read_jsonl",
    "read_separator_files",
]
