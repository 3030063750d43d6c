"""Offline model tools, run from management commands: evaluation (how well the model
finds the pictures it should, on a labelled folder) and precision (int8 calibration and
its agreement with float32). They never run while serving requests."""
