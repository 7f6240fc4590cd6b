"""Measuring models: generated or loaded inputs, `run`, `compare` (one tolerance rule), and `bench` with its report."""
