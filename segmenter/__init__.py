"""segmenter: neural text segmentation with swappable attention."""

__version__ = "0.1.0"

__all__ = ["Segmenter", "__version__"]

from segmenter.cli import config as _config

_config.register()  # ${uid:} and the generated attention configs, before any config is composed


def __getattr__(name: str):
    # Lazy: `import segmenter` stays light; torch loads only when Segmenter is used.
    if name == "Segmenter":
        from segmenter.inference.api import Segmenter

        return Segmenter
    raise AttributeError(f"module 'segmenter' has no attribute {name!r}")
