"""Command handlers, one module per concern; importing this package fills the table."""

from ketch.server.commands import data_setup, files, info, login, navigation, transfer

__all__ = ["data_setup", "files", "info", "login", "navigation", "transfer"]
