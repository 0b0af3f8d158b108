"""Errors a user can fix: the runner prints their message as one line and exits non-zero."""


class GdrqError(Exception):
    """Base of every error caused by bad input rather than a bug."""


class ConfigError(GdrqError):
    """An invalid configuration value or combination; the message names the key."""


class DataError(GdrqError):
    """A data set that is missing, malformed or laid out wrongly; the message names the path."""
