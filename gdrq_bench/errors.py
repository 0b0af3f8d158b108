"""Errors a user can fix: the runner prints their message as one line and exits non-zero."""


class GdrqError(Exception):
    """Base of every error caused by bad input rather than a bug."""


class ConfigError(GdrqError):
    """An invalid configuration value or combination; the message names the key."""


class DataError(GdrqError):
    """A data set that is missing, malformed or laid out wrongly; the message names the path."""


def check_choice(key: str, value: str, valid: tuple[str, ...] | list[str], what: str = "") -> None:
    """Raise ConfigError naming `key` unless `value` is one of `valid` (`what` qualifies it)."""
    if value not in valid:
        qualifier = f"not {what}" if what else "unknown"
        raise ConfigError(f"{key}={value}: {qualifier}; valid: {', '.join(valid)}")
