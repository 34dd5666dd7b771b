"""Serving a model over HTTP: an API with dynamic batching and a web page (docs/serving.md).

    python scripts/serve.py ckpt_path=outputs/runs/<run>/checkpoints/last.ckpt

or, inside another program::

    from segmenter import Segmenter
    from segmenter.serve import create_app
    app = create_app(Segmenter.from_checkpoint(path))   # any ASGI server runs it

Needs the ``serve`` extra (``pip install -e '.[serve]'``: FastAPI, uvicorn).
"""

from segmenter.serve.app import Batching, Limits, create_app, model_card
from segmenter.serve.batcher import MicroBatcher, Overloaded

__all__ = ["Batching", "Limits", "MicroBatcher", "Overloaded", "create_app", "model_card"]
