"""Option values the commands share."""
from __future__ import annotations

import click


def parse_size(text: str | None, option: str = "--input-size") -> tuple[int, int] | None:
    """"480x640" -> (480, 640)."""
    if not text:
        return None
    height, sep, width = text.lower().partition("x")
    if not sep or not height.isdigit() or not width.isdigit():
        raise click.BadParameter(f"expected HxW such as 480x640, got {text!r}",
                                 param_hint=option)
    return int(height), int(width)
