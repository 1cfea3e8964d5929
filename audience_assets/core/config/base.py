"""What every configuration model shares: strict models (unknown keys are errors), names usable everywhere."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")  # usable as a partition key, an S3 prefix and a SQL name


class ConfigError(ValueError):
    """A configuration file is missing or invalid; the message says where and what to fix."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
