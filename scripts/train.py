"""Train a segmentation model: python scripts/train.py attention=localized trainer.max_epochs=2
(installed: segmenter-train ...; the command is segmenter.cli.commands.train)."""

from segmenter.cli.commands import train

if __name__ == "__main__":
    train()
