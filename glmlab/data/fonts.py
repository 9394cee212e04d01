"""Finding a font that draws Chinese, for the synthetic invoices.

PIL's built-in font has no CJK glyphs: Chinese text drawn with it comes out as empty boxes ("tofu"),
and a model trained on that learns nothing. The lookup order is:

1. the env var `GLMLAB_CJK_FONT` (a .ttf/.otf/.ttc path), for a font of your choice;
2. the PyPI package `pylopdf-fonts-zh-cn` (Noto Sans SC and Noto Serif SC, SIL OFL), which installs
   without root: `pip install pylopdf-fonts-zh-cn`;
3. common system paths (Debian's `fonts-noto-cjk` and `fonts-wqy-zenhei`, macOS, Windows).

When none is found, `find_cjk_font` raises a `ConfigError` that says how to install one. Every font
found is checked to really hold CJK glyphs (`has_glyphs`), so a wrong env var fails loudly too.
"""

from __future__ import annotations

import logging
import os
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from glmlab.errors import ConfigError

logger = logging.getLogger(__name__)

ENV_VAR = "GLMLAB_CJK_FONT"
STYLES = ("sans", "serif")
SYSTEM_FONTS = {
    "sans": (
        "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
        "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
        "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
        "/System/Library/Fonts/PingFang.ttc",
        "C:/Windows/Fonts/msyh.ttc",
    ),
    "serif": (
        "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
        "/System/Library/Fonts/Songti.ttc",
        "C:/Windows/Fonts/simsun.ttc",
    ),
}
INSTALL_HINT = (
    "install one with `pip install pylopdf-fonts-zh-cn` (no root needed), or "
    "`apt-get install fonts-noto-cjk`, or set GLMLAB_CJK_FONT=/path/to/a/CJK/font.otf"
)
_PROBE_TEXT = "发票金额"  # characters every Simplified Chinese font has


def find_cjk_font(style: str = "sans") -> Path:
    """Path of a font with Chinese glyphs in `style` ("sans" or "serif"; falls back to the other)."""
    if style not in STYLES:
        raise ConfigError(f"font style {style!r}: expected one of {STYLES}.")
    return _find(style, os.environ.get(ENV_VAR))


@cache
def _find(style: str, env: str | None) -> Path:
    for origin, path in _candidates(style, env):
        if path is None or not path.is_file():
            continue
        if not has_glyphs(ImageFont.truetype(str(path), 24), _PROBE_TEXT):
            if origin == ENV_VAR:
                raise ConfigError(
                    f"{ENV_VAR}={path}: this font has no Chinese glyphs; point it at a CJK font "
                    f"or unset it ({INSTALL_HINT})."
                )
            continue
        logger.info("CJK font (%s) -> %s (from %s)", style, path, origin)
        return path
    if env:
        raise ConfigError(f"{ENV_VAR}={env}: no such font file; fix the path or unset it.")
    raise ConfigError(f"No font with Chinese glyphs found for the Chinese invoices: {INSTALL_HINT}.")


def _candidates(style: str, env: str | None):
    """(origin, path) in lookup order; the other style is a fallback after the wanted one."""
    if env:
        yield ENV_VAR, Path(env)
        return
    other = "serif" if style == "sans" else "sans"
    for wanted in (style, other):
        yield "pylopdf-fonts-zh-cn", _package_font(wanted)
        for path in SYSTEM_FONTS[wanted]:
            yield "system", Path(path)


def _package_font(style: str) -> Path | None:
    try:
        import pylopdf_fonts_zh_cn
    except ImportError:
        return None
    return pylopdf_fonts_zh_cn.sans_path() if style == "sans" else pylopdf_fonts_zh_cn.serif_path()


def load_font(size: int, style: str = "sans", *, cjk: bool = True) -> ImageFont.FreeTypeFont:
    """A font of `size` px. With `cjk=False` a font without Chinese is fine: PIL's own when none is found."""
    try:
        return _truetype(str(find_cjk_font(style)), size)
    except ConfigError:
        if cjk:
            raise
        logger.info("no CJK font found; English text uses PIL's built-in font")
        return ImageFont.load_default(size)


@lru_cache(maxsize=64)
def _truetype(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def has_glyphs(font: ImageFont.FreeTypeFont, text: str) -> bool:
    """Whether every character of `text` draws as a real glyph, not the font's missing-glyph box.

    Each character is drawn and compared with the drawing of a private-use code point, which no
    font maps: a character drawn the same way (or with no ink at all) is missing from the font.
    """
    missing = _ink(font, "\ue000")
    for char in text:
        drawn = _ink(font, char)
        if not drawn.any() or (drawn.shape == missing.shape and np.array_equal(drawn, missing)):
            return False
    return True


def _ink(font: ImageFont.FreeTypeFont, char: str) -> np.ndarray:
    size = int(font.size * 2)
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).text((size // 4, size // 4), char, font=font, fill=255)
    return np.asarray(canvas) > 127
