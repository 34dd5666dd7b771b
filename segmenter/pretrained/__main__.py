"""python -m segmenter.pretrained: the shipped models, each with its card."""

import sys

from segmenter.pretrained import MODELS, card, checkpoint_path


def main() -> int:
    for name, what in MODELS.items():
        try:
            path = checkpoint_path(name)
        except FileNotFoundError as e:
            print(f"# {name}: {what}\n\n(not installed: {e})\n")
            continue
        print(f"# {name}: {what}\n{path} ({path.stat().st_size / 1e6:.1f} MB)\n")
        print(card(name).strip() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
