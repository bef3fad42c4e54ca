"""Admin listener: health, readiness, metrics, config, audit, catalog, usage."""
from .server import AdminServer, redact_config

__all__ = ["AdminServer", "redact_config"]
