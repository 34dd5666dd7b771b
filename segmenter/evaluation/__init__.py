"""Measuring models: the evaluate command, the baselines it compares with, the attention benchmark."""
