"""The HTTP cache: RFC 9111 shared-cache semantics with RFC 5861 extensions."""

from .stage import CacheStage, make_store

__all__ = ["CacheStage", "make_store"]
