"""Segment text with a trained checkpoint (options: segmenter/conf/predict.yaml):

python scripts/predict.py ckpt_path=outputs/runs/<run>/checkpoints/last.ckpt input=doc.txt
cat doc.txt | python scripts/predict.py ckpt_path=... input=- units=lines

Installed: segmenter-predict ... (the command is segmenter.cli.commands.predict).
"""

from segmenter.cli.commands import predict

if __name__ == "__main__":
    predict()
