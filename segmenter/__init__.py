"""segmenter: neural text segmentation with swappable attention."""

__version__ = "0.1.0"
