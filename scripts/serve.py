"""Serve a model over HTTP: the JSON API and a web page (options: segmenter/conf/serve.yaml, docs/serving.md):

python scripts/serve.py ckpt_path=outputs/runs/<run>/checkpoints/last.ckpt
python scripts/serve.py ckpt_path=... host=0.0.0.0 port=8080 units=lines

Installed: segmenter-serve ... (the command is segmenter.cli.commands.serve).
"""

from segmenter.cli.commands import serve

if __name__ == "__main__":
    serve()
