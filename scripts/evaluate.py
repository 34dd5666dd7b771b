"""Evaluate a checkpoint next to baselines: python scripts/evaluate.py ckpt_path=... data=choi
(installed: segmenter-evaluate ...; the command is segmenter.cli.commands.evaluate)."""

from segmenter.cli.commands import evaluate

if __name__ == "__main__":
    evaluate()
