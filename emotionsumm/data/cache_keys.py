"""The names of cache entries: a short hash of the settings (and, for files, the identities) they depend on."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def settings_key(value: Any, length: int = 20) -> str:
    """A `length`-character hash of a JSON-able value (dict keys sorted, so their order does not matter)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:length]
