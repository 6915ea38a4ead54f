"""The HTTP API (FastAPI): routes are thin; services hold the logic."""
