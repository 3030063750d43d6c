"""Small readers for environment variables that fail loudly on a bad value."""

from __future__ import annotations

import ipaddress
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
Number = TypeVar("Number", int, float)


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}.")


def env_int(
    name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {raw!r}.") from None
    return _within(name, value, minimum, maximum)


def env_float(
    name: str, default: float, *, minimum: float | None = None, maximum: float | None = None
) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {raw!r}.") from None
    # float() reads "nan", "inf" and "1e400" (inf); NaN passes every comparison below, so
    # URL_FETCH_DEADLINE_SECONDS=nan would otherwise quietly remove the deadline.
    if not math.isfinite(value):
        raise ImproperlyConfigured(f"{name} must be a finite number, not {raw.strip()!r}.")
    return _within(name, value, minimum, maximum)


def _within(name: str, value: Number, minimum: Number | None, maximum: Number | None) -> Number:
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}.")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum}, not {value}.")
    return value


def env_ports(name: str, default: Sequence[int]) -> tuple[int, ...]:
    """A comma-separated list of TCP ports (1-65535); empty or unset: `default`."""
    items = env_list(name, [])
    if not items:
        return tuple(default)
    ports = []
    for item in items:
        if not (item.isascii() and item.isdigit()) or not 1 <= int(item) <= 65535:
            raise ImproperlyConfigured(
                f"{name} must list TCP ports from 1 to 65535 separated by commas, e.g. "
                f"80,443; {item!r} is not one."
            )
        ports.append(int(item))
    return tuple(ports)


def env_json(name: str, default: Any) -> Any:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be JSON ({exc}).") from None


def _refuse_constant(constant: str) -> None:
    # Python's json reads NaN and Infinity, which JSON itself does not have.
    raise ValueError(f"{constant} is not a JSON number")


def env_choice(name: str, default: str, choices: Sequence[str]) -> str:
    value = env_str(name, default).lower() or default
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}; got {value!r}.")
    return value


def env_list(name: str, default: Sequence[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_networks(name: str) -> list[str]:
    """Comma-separated IP networks (CIDRs; a bare address is a network of one), each
    checked; the list keeps them as written."""
    networks = env_list(name, [])
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ImproperlyConfigured(
                f"{name} must be IP networks such as 10.0.0.0/8 or 2001:db8::/32, separated by"
                f" commas; {network!r} is not one."
            ) from None
    return networks


def load_dotenv(path: os.PathLike) -> None:
    """Read KEY=VALUE lines from `path` into the environment, never overriding what is set."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        if not sep or not key.strip().isidentifier():
            raise ImproperlyConfigured(f"{path}:{number}: expected KEY=VALUE, got {line!r}.")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        os.environ.setdefault(key.strip(), value)
