"""segmenter: neural text segmentation with swappable attention."""

__version__ = "0.1.0"

__all__ = ["Segmenter", "__version__"]

from segmenter import resolvers as _resolvers

_resolvers.register()  # ${uid:} in conf/hydra/default.yaml


def __getattr__(name: str):
    # Lazy: `import segmenter` stays light; torch loads only when Segmenter is used.
    if name == "Segmenter":
        from segmenter.predict import Segmenter

        return Segmenter
    raise AttributeError(f"module 'segmenter' has no attribute {name!r}")
