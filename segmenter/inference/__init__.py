"""Using a trained model: the Python API, checkpoints, calibration and the predict command."""
