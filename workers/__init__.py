"""Matte Farm workers: the Celery app, the pipeline, model adapters and I/O."""
