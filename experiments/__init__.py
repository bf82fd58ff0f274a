"""Experiment entry points (``python -m experiments.main``)."""
