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


def parse_backend_options(items: tuple[str, ...] | list[str],
                          option: str = "--backend-option") -> dict[str, object]:
    """``("cuda_graphs=false", "ring=4", "provider=tensorrt")`` -> keyword arguments for the
    backend factory: true/false become booleans, integers and decimals numbers, the rest
    strings."""
    options: dict[str, object] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier():
            raise click.BadParameter(f"expected KEY=VALUE such as cuda_graphs=false, got "
                                     f"{item!r}", param_hint=option)
        text = text.strip()
        value: object = text
        if text.lower() in ("true", "false"):
            value = text.lower() == "true"
        else:
            for kind in (int, float):
                try:
                    value = kind(text)
                    break
                except ValueError:
                    continue
        options[key] = value
    return options
