"""The four commands a user runs: ``segmenter-train``, ``segmenter-predict``,
``segmenter-evaluate``, ``segmenter-serve`` once segmenter is installed (pyproject's
``[project.scripts]``), and ``python scripts/<name>.py`` in a checkout (thin wrappers of these
functions). Each is a Hydra app on segmenter/conf/<name>.yaml: its arguments are Hydra
overrides (``key=value``), ``--help`` lists its settings.

Each body imports its work only once Hydra has set up logging (and so a refused config value
never loads torch).
"""

from __future__ import annotations

from omegaconf import DictConfig

from segmenter.cli.app import main


@main(config_name="train")
def train(cfg: DictConfig) -> float | None:
    """Train a model: ``segmenter-train attention=localized trainer.max_epochs=2``."""
    from segmenter.training.train import train as run

    metrics = run(cfg)
    # Returned to sweepers (e.g. Optuna) as the value to optimize.
    return metrics.get(cfg.get("optimized_metric"))


@main(config_name="predict")
def predict(cfg: DictConfig) -> None:
    """Segment text: ``segmenter-predict pretrained=lyrics input=song.txt``."""
    from segmenter.inference.predict import run

    run(cfg)


@main(config_name="evaluate")
def evaluate(cfg: DictConfig) -> None:
    """Score a model next to the baselines: ``segmenter-evaluate pretrained=topic data=wiki``."""
    from segmenter.evaluation.evaluate import evaluate as run

    run(cfg)


@main(config_name="serve")
def serve(cfg: DictConfig) -> None:
    """Serve a model over HTTP: ``segmenter-serve pretrained=topic port=8080``."""
    from segmenter.serve.run import run

    run(cfg)
