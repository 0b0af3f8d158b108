"""The command line's spelling of config choices that Hydra reads otherwise."""

from __future__ import annotations

import re

# Groups whose option names are numbers (bits=4): Hydra reads `bits=4` as an int and refuses it
# as a group choice, so the command line is rewritten to the quoted form it accepts (bits='4').
NUMERIC_CHOICE_GROUPS = ("bits",)
CHOICE_LIST = re.compile(r"^(\w+)=([\w',]+)$")


def quote_numeric_choice(override: str) -> str:
    """bits=4 -> bits='4' and bits=8,4,w2a4 -> bits='8','4',w2a4; anything else unchanged."""
    match = CHOICE_LIST.match(override)
    if not match or match[1] not in NUMERIC_CHOICE_GROUPS:
        return override
    values = (f"'{value}'" if value.isdigit() else value for value in match[2].split(","))
    return f"{match[1]}=" + ",".join(values)


def unquote_numeric_choice(override: str) -> str:
    """The inverse, so the recorded command reads as a user would type it."""
    match = CHOICE_LIST.match(override)
    if not match or match[1] not in NUMERIC_CHOICE_GROUPS:
        return override
    return f"{match[1]}={match[2].replace(chr(39), '')}"
