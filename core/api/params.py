"""Path parameters shared by routers."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Path
from pydantic import BeforeValidator

MAX_BIGINT = 2**63 - 1
DIGITS = re.compile(r"\A[1-9][0-9]*\Z")


def digits_of(kind: str) -> Callable[[Any], Any]:
    """A check that a positive bigint path parameter is written as decimal digits only (Python's
    int() also reads " 1", "1_000", "01"), and at most ``MAX_BIGINT`` (a longer run of digits is said
    to be out of range, not to be something other than digits)."""

    def digits(value: Any) -> Any:
        if isinstance(value, str):
            if not DIGITS.match(value):
                raise ValueError(f"a {kind} id is a positive integer in decimal digits, e.g. 42")
            if len(value) > len(str(MAX_BIGINT)) or int(value) > MAX_BIGINT:
                raise ValueError(f"a {kind} id is at most {MAX_BIGINT} (out of range)")
        return value

    return digits


JobId = Annotated[int, Path(ge=1, le=MAX_BIGINT), BeforeValidator(digits_of("job"))]
ThreadId = Annotated[int, Path(ge=1, le=MAX_BIGINT), BeforeValidator(digits_of("thread"))]
