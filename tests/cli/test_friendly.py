"""One console line per event, plain progress off a terminal, a training run's summary, test
table and closing line, result files with the usual permissions, progress for long
predictions, hard-wrapped text."""

from __future__ import annotations

import logging
import os
import re
import stat
import warnings

import pytest
from lightning.pytorch.callbacks import RichProgressBar

from segmenter import Segmenter
from segmenter.core.io import atomic_write
from segmenter.inference.api import Progress
from segmenter.training.callbacks import LogProgress
from segmenter.training.train import for_terminal, one_line_per_event, train


def test_lightning_messages_once_and_no_advertisement(caplog):
    lightning_log = logging.getLogger("lightning")
    lightning_log.addHandler(logging.StreamHandler())  # what `import lightning` installs
    one_line_per_event()
    assert not [h for h in lightning_log.handlers if type(h) is logging.StreamHandler]
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    with caplog.at_level(logging.INFO):
        rank_zero.info(
            "💡 Tip: For seamless cloud logging, try installing [litlogger](https://pypi.org/project/litlogger/)"
        )
        rank_zero.info("GPU available: False, used: False")
    assert "GPU available" in caplog.text and "Tip:" not in caplog.text
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        one_line_per_event()
        warnings.warn(
            "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)`",
            FutureWarning,
            stacklevel=1,
        )
    assert not seen


def test_plain_progress_when_not_on_a_terminal(tiny_cfg, caplog):
    bar = RichProgressBar()
    assert for_terminal([bar], tty=True) == [bar]
    (plain,) = for_terminal([bar], tty=False)
    assert isinstance(plain, LogProgress)
    with caplog.at_level(logging.INFO):  # pytest's stdout is not a terminal
        train(tiny_cfg("debug=fdr", "logger=none", "callbacks.lr_monitor=null"))
    lines = [r.getMessage() for r in caplog.records if r.name == "segmenter.training.callbacks"]
    assert any(line.startswith("epoch 1") and "val/f1=" in line for line in lines), lines
    assert "Tip:" not in caplog.text


def test_training_output_is_what_a_user_reads(tiny_cfg, tmp_path, caplog, capsys):
    cfg = tiny_cfg("debug=limit", "logger=none", "callbacks.lr_monitor=null")
    with caplog.at_level(logging.INFO):
        train(cfg)
    out = capsys.readouterr()
    console = out.out + out.err + caplog.text
    # The model summary: layers and parameters, no FLOPs column of zeros (none are counted)
    (summary,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("model:")]
    assert "net.encoder" in summary and "trainable params" in summary
    assert "FLOPs" not in console, summary
    # Lightning does not announce that it skips its own summary for ours
    assert "already configured with model summary" not in console
    # The test metrics, rounded: no float printed with 16 digits
    (table,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("test of ")]
    values = re.findall(r"^  test/\S+\s+(\S+)$", table, flags=re.M)
    assert len(values) >= 4 and all(len(v.lstrip("0.").replace(".", "")) <= 4 for v in values), table
    assert not re.search(r"\d\.\d{7,}", console)
    # The last line names the run folder and the best checkpoint
    last = caplog.records[-1].getMessage()
    best = next((tmp_path / "run" / "checkpoints").glob("epoch_*.ckpt"))
    assert last.startswith(f"run folder: {tmp_path / 'run'}; best checkpoint: {best}, val/f1="), last


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_result_files_get_the_usual_permissions(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "metrics.json", "{}\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == mode


@pytest.fixture(scope="module")
def seg(tiny_checkpoint) -> Segmenter:
    return Segmenter.from_checkpoint(tiny_checkpoint)


def test_long_predictions_show_progress(seg, caplog, monkeypatch):
    monkeypatch.setattr(Progress, "every", 0.0)
    doc = [f"unit {i} about the cat" for i in range(300)]
    with caplog.at_level(logging.INFO, logger="segmenter.inference.api"):
        Segmenter(net=seg.net, max_units=32, overlap=8, batch_size=2).predict([doc])
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("predicting: ")]
    assert len(lines) > 3 and "windows" in lines[-1], lines


def test_hard_wrapped_text_splits_at_sentences_not_lines(seg):
    text = (
        "In the current state of the art, segmentation models read\n"
        "one sentence at a time. They compare neighbours to find\n"
        "where the topic changes.\n"
        "\n"
        "Stocks fell sharply on Monday as investors worried about\n"
        "rising interest rates. The central bank said it would act.\n"
    )
    assert seg.split(text) == [
        "In the current state of the art, segmentation models read one sentence at a time.",
        "They compare neighbours to find where the topic changes.",
        "Stocks fell sharply on Monday as investors worried about rising interest rates.",
        "The central bank said it would act.",
    ]
