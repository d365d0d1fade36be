"""Command handlers, one module per concern; importing this package fills the table."""

from ketch.server.commands import (
    data_setup,
    extensions,
    files,
    hashing,
    info,
    login,
    navigation,
    security,
    transfer,
)

__all__ = [
    "data_setup",
    "extensions",
    "files",
    "hashing",
    "info",
    "login",
    "navigation",
    "security",
    "transfer",
]
