"""Matte Farm services: API, store, CLI and client."""
