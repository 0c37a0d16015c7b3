"""What every configuration section shares: the section base model (unknown keys fail, values frozen, attribute
docstrings are the keys' descriptions), :class:`ConfigError` and the identifier and window patterns.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_WINDOW = re.compile(r"^(\d+)([hd])$")


class ConfigError(ValueError):
    """The configuration file or an override is invalid; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
