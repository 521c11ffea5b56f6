"""Themes are data: themes/themes.toml holds the palettes (with the $risk-* colours) and
themes/capguard.tcss the layout. Both ship in the wheel as capguard_tui/themes."""

from __future__ import annotations

import tomllib
from pathlib import Path

from textual.theme import Theme

import capguard_tui

RISK_DEFAULTS = {
    "risk-safe": "#4fa86b",
    "risk-warning": "#d9a441",
    "risk-critical": "#e07b39",
    "risk-liquidation": "#e0564f",
    "risk-stale": "#8a93a3",
    "risk-text": "#0e1014",
    "gauge-track": "#2c323d",
}


def themes_dir() -> Path:
    """capguard_tui/themes inside an installed wheel, else the source tree's themes/."""
    packaged = Path(capguard_tui.__file__).resolve().parent / "themes"
    if packaged.is_dir():
        return packaged
    return Path(capguard_tui.__file__).resolve().parent.parent / "themes"


def stylesheet() -> Path:
    return themes_dir() / "capguard.tcss"


def load_themes(path: Path | None = None) -> dict[str, Theme]:
    """The themes of themes.toml by name (ValueError naming the theme when one is malformed)."""
    path = path or themes_dir() / "themes.toml"
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    out = {}
    for name, spec in data.items():
        spec = dict(spec)
        variables = {**RISK_DEFAULTS, **spec.pop("variables", {})}
        try:
            out[name] = Theme(name=name, variables=variables, **spec)
        except TypeError as exc:
            raise ValueError(f"{path}: theme {name!r}: {exc}") from None
    return out
