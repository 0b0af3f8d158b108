"""Errors a user can fix: the runner prints their message as one line and exits non-zero."""


class GdrqError(Exception):
    """Base of every error caused by bad input rather than a bug.

    An error raised in a data-loader worker process comes back to the main process as the
    same class built from torch's report, "Caught X in DataLoader worker process N.
    Original Traceback ... module.X: <message>": it keeps the original one-line message.
    """

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(_own_message(str(message)), *args)


WORKER_REPORT = "in DataLoader worker process"


def _own_message(message: str) -> str:
    """The worker's original message out of torch's report; any other message unchanged."""
    first, *rest = message.splitlines() or [""]
    if not (first.startswith("Caught ") and WORKER_REPORT in first and rest):
        return message
    last = next(line for line in reversed(rest) if line.strip())
    return last.split(": ", 1)[1] if ": " in last else last


class ConfigError(GdrqError):
    """An invalid configuration value or combination; the message names the key."""


class DataError(GdrqError):
    """A data set that is missing, malformed or laid out wrongly; the message names the path."""


class TrainingError(GdrqError):
    """Training cannot go on (a non-finite loss); names the stage and step."""


class ExportError(GdrqError):
    """A model, or a part of it, that the ONNX export does not cover, or an exported graph
    that fails its check; names the layer or part."""


class FoldError(GdrqError):
    """The folded model differs from the quantized one beyond trainer.fold_tolerance; names
    the first layer that differs."""


class SweepError(GdrqError):
    """A gdrq-sweep preset that does not exist or is malformed."""


def check_choice(key: str, value: str, valid: tuple[str, ...] | list[str], what: str = "") -> None:
    """Raise ConfigError naming `key` unless `value` is one of `valid` (`what` qualifies it)."""
    if value not in valid:
        qualifier = f"not {what}" if what else "unknown"
        raise ConfigError(f"{key}={value}: {qualifier}; valid: {', '.join(valid)}")
