"""The ``mattefarm`` command line."""
