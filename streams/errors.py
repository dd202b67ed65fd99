"""The exception hierarchy: one root, one subclass per concern.

Every message names the input that was wrong, where, and what would be right.
"""

from __future__ import annotations


class StreamsError(Exception):
    """Root of every error this package raises on purpose.

    Whether a failure is retried is decided by the loop that catches it, by class (docs/decisions/0024).
    """


class ConfigError(StreamsError):
    """Settings or environment are wrong (missing tool, bad URL, ...)."""


class CatalogError(StreamsError):
    """topics.yaml (or a schema it names) is invalid; nothing was applied."""


class AdminError(StreamsError):
    """A plan could not be made or applied against the cluster."""


class LocalStackError(StreamsError):
    """The embedded local stack could not be started, reached or stopped."""


class SchemaError(StreamsError):
    """A schema is invalid, incompatible, or could not be found."""


class PublishError(StreamsError):
    """An event could not be validated, encoded or delivered."""


class AuthorizationError(StreamsError):
    """The brokers refused an operation for a missing ACL; the message names principal, resource and operation."""
