"""orjson for python-socketio's ``json=`` hook (process-wide; also used by the Redis manager).

Falls back to the standard library for what orjson refuses (integers beyond 64 bits,
non-string keys), so hostile payloads decode the same as before, only slower.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


class OrjsonShim:
    JSONDecodeError = json.JSONDecodeError

    @staticmethod
    def dumps(obj: Any, *args: Any, **kwargs: Any) -> str:
        try:
            return orjson.dumps(obj).decode()
        except TypeError:
            return json.dumps(obj, *args, **kwargs)

    @staticmethod
    def loads(data: str | bytes, *args: Any, **kwargs: Any) -> Any:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            return json.loads(data, *args, **kwargs)
