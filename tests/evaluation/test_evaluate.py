"""Evaluation end to end: train a tiny run, evaluate its checkpoint next to the baselines."""

from __future__ import annotations

import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from segmenter.cli.config import ConfigError
from segmenter.core.document import BOUNDARY, Document, boundary_labels, segments_to_document
from segmenter.data.builtin import BuiltinCorpus
from segmenter.data.datamodule import SegmentationDataModule
from segmenter.evaluation.evaluate import check_held_out, evaluate, evaluate_documents, score, to_markdown
from segmenter.training.metrics import pk, window_diff
from segmenter.training.train import train
from tests.helpers import AGREE, CONF, DIFFER, TINY_DATA, compose_train

FAST = (
    "attention=localized",
    "debug=limit",
    "logger=none",
    "callbacks.lr_monitor=null",
    "callbacks.rich_progress_bar=null",
)


def compose_evaluate(overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="evaluate", overrides=list(overrides))


def test_table_per_subset_and_overall():
    docs = [
        segments_to_document("a", [["x"] * 3, ["y"] * 3], {"subset": "3-5"}),
        segments_to_document("b", [["x"] * 7, ["y"] * 7], {"subset": "6-8"}),
    ]
    perfect = {d.id: d.labels[:-1] for d in docs}
    table = evaluate_documents(
        docs,
        "boundary",
        {"oracle": lambda u: perfect["a" if len(u) == 6 else "b"], "none": lambda u: [0] * (len(u) - 1)},
    )
    assert list(table) == ["3-5", "6-8", "all"]
    assert table["all"]["docs"] == 2
    assert table["all"]["oracle"] == {"f1": 1.0, "precision": 1.0, "recall": 1.0, "pk": 0.0, "windowdiff": 0.0}
    assert table["3-5"]["none"]["pk"] > 0
    assert "| 6-8 | 1 | oracle | 100.0% | 0.0% | 0.0% |" in to_markdown(table, "t")


def test_evaluation_reads_its_documents_a_chunk_at_a_time():
    docs = [segments_to_document(f"d{i}", [["x"] * 3, ["y"] * (2 + i % 3)], {"subset": "ab"[i % 2]}) for i in range(7)]
    read = 0

    def stream():
        nonlocal read
        for d in docs:
            read += 1
            yield d

    read_at_batch = []

    class Model:  # predicts a chunk of documents in one call, as the segmenter does
        def batch(self, units):
            read_at_batch.append(read)
            return [[1] * (len(u) - 1) for u in units]

    every = lambda u: [1] * (len(u) - 1)  # noqa: E731
    none = lambda u: [0] * (len(u) - 1)  # noqa: E731
    table = evaluate_documents(stream(), "boundary", {"model": Model(), "none": none}, chunk=3)
    assert read_at_batch == [3, 6, 7]  # never more than a chunk read ahead of the scoring
    assert table == evaluate_documents(docs, "boundary", {"model": every, "none": none}, chunk=len(docs))
    assert list(table) == ["a", "b", "all"] and table["all"]["docs"] == 7
    assert table["all"]["model"] == score([(every(d.units), d.labels[:-1]) for d in docs])


def test_training_writes_splits_and_evaluate_reuses_them(tiny_cfg, tmp_path, caplog, monkeypatch):
    run = tmp_path / "run"
    cfg = tiny_cfg(*FAST, "data.max_units=12", "data.overlap=4")  # every data option has them (data/default.yaml)
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")  # as Hydra writes it for a CLI run
    with caplog.at_level("INFO"):
        train(cfg)
    assert "labels: inside" in caplog.text and "training windows of <= 12 units" in caplog.text
    splits = json.loads((run / "splits.json").read_text())["splits"]
    assert [len(splits[s]) for s in ("train", "val", "test")] == [16, 4, 4]

    # Evaluation reads the test documents from the corpus store training built, one at a time.
    monkeypatch.setattr(BuiltinCorpus, "load", lambda self: pytest.fail("the corpus was read whole"))
    ecfg = compose_evaluate([f"ckpt_path={run}/checkpoints/last.ckpt"])
    with caplog.at_level("INFO"):
        result = evaluate(ecfg)
    assert "its split file" in caplog.text and "is the store's" in caplog.text
    assert result["documents"] == splits["test"]
    rows = result["table"]["all"]
    assert {"segmenter (LocalizedAttention)", "no boundaries", "every unit", "C99", "TextTiling (sentences)"} <= set(
        rows
    )
    assert rows["no boundaries"]["f1"] == 0.0 and rows["every unit"]["recall"] == 1.0
    assert (run / "eval" / "test.md").read_text().startswith("### test: 4 documents")
    assert json.loads((run / "eval" / "test.json").read_text())["table"] == result["table"]

    # Decisions on the calibrated probabilities: their own tables; threshold 1 cuts (almost) nowhere.
    steered = evaluate(
        compose_evaluate([f"ckpt_path={run}/checkpoints/last.ckpt", "threshold=1.0", "min_segment_units=2"])
    )
    row = steered["table"]["all"]["segmenter (LocalizedAttention), threshold=1.0, min_segment_units=2"]
    assert row["pk"] >= rows["no boundaries"]["pk"] - 0.05 and row["recall"] <= 0.25
    assert (run / "eval" / "test_threshold1.0_min_segment_units2.md").is_file()
    assert (run / "eval" / "test.md").read_text().startswith("### test: 4 documents")  # the network's table stays


@pytest.mark.slow  # a second training run (~20 s)
def test_evaluate_refuses_other_test_documents(tiny_cfg, tmp_path):
    run = tmp_path / "run"
    cfg = tiny_cfg(*FAST)
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    train(cfg)
    # Same corpus, another seed: other test documents than the run's split file lists.
    other = OmegaConf.to_container(cfg.data, resolve=True)
    other["corpus"]["seed"] = 1
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml({**OmegaConf.to_container(cfg), "data": other}))
    with pytest.raises(ValueError, match="differ from the run's"):
        evaluate(compose_evaluate([f"ckpt_path={run}/checkpoints/last.ckpt"]))


def test_other_documents_are_evaluated_only_when_the_run_held_them_out(tmp_path, caplog):
    # A mixture's split file names documents with their corpus ("wiki:12/34"); the same article
    # evaluated on its own (joined sections, fewer levels) keeps the bare id.
    split_file = tmp_path / "splits.json"
    split_file.write_text(
        json.dumps({"splits": {"train": ["wiki:12/34", "choi:synthetic-train-0"], "test": ["wiki:56/78"]}})
    )
    held_out = [Document("56/78", ["a", "b"], [1, 0]), Document("wiki:90/12", ["c"], [0])]
    assert check_held_out(iter(held_out), split_file, data="data=wiki") == 2
    assert "none of their 2 ids is among its 2 training documents" in caplog.text
    with pytest.raises(
        ConfigError, match=r"1 of the 3 documents of data=wiki were trained on by this run, e.g. '12/34'"
    ):
        check_held_out([*held_out, Document("12/34", ["d"], [0])], split_file, data="data=wiki")
    with pytest.raises(ConfigError, match="1 of the 1 documents"):
        check_held_out([Document("wiki:12/34", ["d"], [0])], split_file, data="data=wiki")


def test_datamodule_rejects_bad_window_settings():
    with pytest.raises(ValueError, match="max_units=4, overlap=4"):
        SegmentationDataModule(corpus=None, max_units=4, overlap=4)


def test_score_keeps_pk_and_windowdiff_apart():
    out = score([AGREE, DIFFER])
    wd = [window_diff(torch.tensor(h), torch.tensor(r)) for h, r in (AGREE, DIFFER)]
    pks = [pk(torch.tensor(h), torch.tensor(r)) for h, r in (AGREE, DIFFER)]
    assert out["windowdiff"] == pytest.approx(sum(wd) / 2) and out["pk"] == pytest.approx(sum(pks) / 2)
    assert out["windowdiff"] != pytest.approx(out["pk"])


def test_section_labels_evaluate_with_crf_and_section_baselines(tmp_path, songs_jsonl):
    """A verse/chorus run with the self-similarity view and a CRF: evaluate scores the model
    with Viterbi and with argmax, next to the all-verse and repetition-rule baselines, on
    macro F1, F1 per label and the label changes; boundary-only baselines are skipped."""
    run = tmp_path / "run"
    cfg = compose_train(
        tmp_path,
        [
            "data=jsonl",
            f"data.corpus.path={songs_jsonl}",
            *FAST,
            "+model.net.similarity={_target_: segmenter.models.net.SelfSimilarity, dim: ${model.net.dim}}",
            "+model.net.crf={_target_: segmenter.models.crf.LinearChainCRF, _partial_: true}",
        ],
    )
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    train(cfg)
    result = evaluate(compose_evaluate([f"ckpt_path={run}/checkpoints/last.ckpt"]))
    rows = result["table"]["all"]
    model = "segmenter (LocalizedAttention)"
    assert {f"{model}, CRF", f"{model}, argmax", "all verse", "repetition rule (a recurring unit is chorus)"} == set(
        rows
    ) - {"docs"}
    for m in rows.values():
        if isinstance(m, dict):
            assert {"f1", "f1_verse", "f1_chorus", "boundary_f1", "pk", "windowdiff"} <= set(m)
            assert m["f1"] == pytest.approx((m["f1_verse"] + m["f1_chorus"]) / 2, abs=1e-6)
    assert rows["all verse"]["f1_chorus"] == 0.0
    # synthetic choruses recur exactly or with an ad-lib; verse lines never: the rule is nearly exact
    assert rows["repetition rule (a recurring unit is chorus)"]["f1"] > 0.8
    assert "| macro F1 ↑ | F1 chorus ↑ | F1 verse ↑ | boundary F1 ↑ |" in (run / "eval" / "test.md").read_text()


def test_a_checkpoint_without_its_run_config_is_refused_with_the_file(tiny_checkpoint, tmp_path):
    import shutil

    from segmenter.evaluation.evaluate import load_run

    alone = tmp_path / "alone.ckpt"
    shutil.copy(tiny_checkpoint, alone)
    with pytest.raises(
        FileNotFoundError, match=r"\.hydra/config\.yaml not found next to checkpoint .*alone\.ckpt \(evaluate reads"
    ):
        load_run(alone)


def test_a_shipped_model_is_evaluated_on_named_data_like_a_run(tmp_path, songs_jsonl):
    """pretrained=lyrics with data=: the same table as the model's own predictions scored apart
    (no run folder needed); baselines.<name>=null drops a baseline."""
    from segmenter.core.document import SECTION
    from segmenter.evaluation.evaluate import score_labels
    from segmenter.inference.api import Segmenter

    out = tmp_path / "eval"
    cfg = compose_evaluate(
        [
            "pretrained=lyrics",
            "data=jsonl",
            f"data.corpus.path={songs_jsonl}",
            f"output_dir={out}",
            "baselines.majority=null",
        ]
    )
    result = evaluate(cfg)
    rows = result["table"]["all"]
    assert set(rows) - {"docs"} == {
        "segmenter (SelfAttention), CRF",
        "segmenter (SelfAttention), argmax",
        "repetition rule (a recurring unit is chorus)",
    }
    seg = Segmenter.from_pretrained("lyrics")
    docs = {d.id: d for d in hydra_docs(cfg)}
    preds = seg.predict([docs[i].units for i in result["documents"]])
    apart = score_labels(
        [(p.label_ids, docs[i].labels) for i, p in zip(result["documents"], preds)], SECTION, seg.label_names
    )
    assert rows["segmenter (SelfAttention), CRF"]["f1"] == pytest.approx(apart["f1"], abs=1e-6)
    assert (out / "test.md").read_text().startswith(f"### test: {rows['docs']} documents, pretrained=lyrics")


def hydra_docs(cfg):
    """The test documents of an evaluate config's data."""
    from hydra.utils import instantiate

    return instantiate(cfg.data).corpus.load()["test"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["pretrained=topic"],
            "pretrained=topic has no training run to take its data from: name the documents with data=",
        ),
        (["pretrained=topic", "ckpt_path=x.ckpt", "data=choi"], "not both: ckpt_path=x.ckpt, pretrained=topic"),
        ([], "not neither"),
    ],
)
def test_evaluate_needs_one_model_and_its_documents(overrides, message):
    from segmenter.cli.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        evaluate(compose_evaluate(overrides))


def test_a_limit_that_cuts_a_unit_is_scored_on_the_units():
    from segmenter.evaluation.evaluate import unit_boundaries
    from segmenter.inference.api import Prediction

    # units 0, 1 (cut into pieces 1-3 by a limit), 2: pieces' inner cuts are not unit boundaries
    pred = Prediction(["a", "b1", "b2", "b3", "c"], [0] * 5, ["inside", "boundary"], [0.0] * 5, [1, 1, 0, 1, 0])
    pred.split_units = [(1, 4)]
    assert unit_boundaries(pred) == [1, 1, 0]


def test_a_checkpoint_alone_is_evaluated_on_named_data_under_a_limit(tiny_checkpoint, tmp_path):
    import shutil

    from segmenter.evaluation.evaluate import unit_boundaries
    from segmenter.inference.api import Segmenter

    alone = tmp_path / "alone.ckpt"
    shutil.copy(tiny_checkpoint, alone)
    data = ["data=builtin", *TINY_DATA, f"paths.cache_dir={tmp_path / 'cache'}"]
    with pytest.raises(ConfigError, match="has no training run beside it .* name the documents with data="):
        evaluate(compose_evaluate([f"ckpt_path={alone}"]))
    result = evaluate(
        compose_evaluate([f"ckpt_path={alone}", *data, "max_segment_chars=60", "baselines=null", "split=val"])
    )
    (name,) = [k for k in result["table"]["all"] if k != "docs"]
    assert name.endswith("max_segment_chars=60") and (tmp_path / "eval" / "val_max_segment_chars60.md").is_file()
    seg = Segmenter.from_checkpoint(alone)
    docs = {d.id: d for d in instantiate_docs(compose_evaluate([f"ckpt_path={alone}", *data]), "val")}
    preds = seg.predict([docs[i].units for i in result["documents"]], max_segment_chars=60)
    assert all(e - s <= 60 for p in preds for s, e in p.spans)
    assert any(p.split_units for p in preds)  # units over the limit were cut into pieces
    pairs = [
        (unit_boundaries(p)[:-1], boundary_labels(docs[i].labels, BOUNDARY)[:-1])
        for i, p in zip(result["documents"], preds)
    ]
    assert result["table"]["all"][name]["pk"] == pytest.approx(score(pairs)["pk"], abs=1e-6)


def instantiate_docs(cfg, split):
    from hydra.utils import instantiate

    return instantiate(cfg.data).corpus.load()[split]


def test_a_bfloat16_evaluation_writes_its_own_tables(tmp_path):
    """The float32 tables (the ones a model card embeds) are never overwritten by another
    precision's: minilm_dtype=bfloat16 names its tables and its row."""
    from tests.helpers import CHOI

    folder = tmp_path / "docs" / "3-5"
    folder.mkdir(parents=True)
    (folder / "0.ref").write_text(CHOI)
    out = tmp_path / "eval"
    common = ["pretrained=topic", "data=builtin", f"folder={tmp_path / 'docs'}", f"output_dir={out}"]
    common += [f"paths.cache_dir={tmp_path / 'cache'}", "baselines.c99=null", "baselines.texttiling=null"]
    evaluate(compose_evaluate([*common, "minilm_dtype=bfloat16"]))
    assert sorted(p.name for p in out.iterdir()) == ["docs_minilm_dtypebfloat16.json", "docs_minilm_dtypebfloat16.md"]
    assert "segmenter (LocalizedAttention), minilm_dtype=bfloat16" in (out / "docs_minilm_dtypebfloat16.md").read_text()
    with pytest.raises(ConfigError, match="minilm_dtype='half'"):
        evaluate(compose_evaluate([*common, "minilm_dtype=half"]))


def test_a_run_is_evaluated_on_another_view_of_its_held_out_documents(tiny_checkpoint, tmp_path, caplog):
    """data= other than the run's own: its test documents differ from the run's split file, so
    they are evaluated once none is among the run's training ids; its training split is refused."""
    other = ["data=builtin", *TINY_DATA, "data.corpus.segments_per_doc=6", f"paths.cache_dir={tmp_path / 'cache'}"]
    common = [f"ckpt_path={tiny_checkpoint}", *other, "baselines=null", f"output_dir={tmp_path / 'eval'}"]
    result = evaluate(compose_evaluate(common))
    assert result["documents"] and "are not the run's own split" in caplog.text
    with pytest.raises(ConfigError, match=r"documents of data=\S+ split=train were trained on by this run"):
        evaluate(compose_evaluate([*common, "split=train"]))
