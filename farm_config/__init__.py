"""Farm configuration: settings, worker profiles, the model registry and Celery's config."""

from farm_config.settings import Settings, TokenGrant, get_settings

__all__ = ["Settings", "TokenGrant", "get_settings"]
