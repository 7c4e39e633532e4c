"""Inline SVG icons shipped in assets/icons/ (no emoji: they render as empty boxes where no emoji font is
installed). `icon("attach")` is the markup for HTML fragments; `icon_path("stop")` the file for gr.Button(icon=)."""
from functools import lru_cache
from pathlib import Path

ICONS = Path(__file__).resolve().parents[2] / "assets" / "icons"


def icon_path(name: str) -> str:
    """The SVG file of an icon (FileNotFoundError when there is none)."""
    path = ICONS / f"{name}.svg"
    if not path.is_file():
        raise FileNotFoundError(f"no icon {name!r} in {ICONS}")
    return str(path)


@lru_cache(maxsize=None)
def icon(name: str) -> str:
    """The icon as inline SVG markup (aria-hidden: the text next to it carries the meaning)."""
    return Path(icon_path(name)).read_text(encoding="utf-8").strip()
