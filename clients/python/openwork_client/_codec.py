"""Helpers for the generated models."""

from __future__ import annotations

from typing import Any


class ProtocolError(Exception):
    """The host sent something that does not fit the protocol."""


def required(data: dict[str, Any], member: str, type_name: str) -> Any:
    """A member that must be there."""
    if not isinstance(data, dict):
        raise ProtocolError(f"{type_name} must be a JSON object, got {type(data).__name__}")
    try:
        return data[member]
    except KeyError:
        raise ProtocolError(f"{type_name} lacks its required member `{member}`") from None
