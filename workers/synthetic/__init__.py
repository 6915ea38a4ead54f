"""Synthetic shots with ground truth: the farm's test double and evaluation harness."""
