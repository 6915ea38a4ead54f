"""Plate, EXR and manifest I/O."""
