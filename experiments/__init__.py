"""Experiment configs, the toy world, and the `study` command line."""
