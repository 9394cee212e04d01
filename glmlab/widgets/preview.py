"""Image previews of the VQA widget: small PNG thumbnails, with grounding boxes drawn on them.

GLM-V gives boxes on a 0-1000 scale of the image it saw, so they scale to any thumbnail size with
`glmlab.answer.box_to_pixels`; drawing them on the thumbnail keeps the widget's messages small.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

from glmlab.answer import box_to_pixels
from glmlab.images import encode_png

THUMBNAIL_PX = 224  # longest side of a preview, in pixels
BOX_COLOUR = (230, 25, 75)


def thumbnail_png(
    image: Image.Image, boxes: Sequence[Sequence[float]] = (), max_side: int = THUMBNAIL_PX
) -> bytes:
    """PNG bytes of `image` shrunk to at most `max_side` pixels, with `boxes` (0-1000 scale) outlined."""
    thumb = image.copy()
    thumb.thumbnail((max_side, max_side))
    draw = ImageDraw.Draw(thumb)
    for box in boxes:
        x1, y1, x2, y2 = box_to_pixels(list(box), thumb.width, thumb.height)
        # a model may swap corners; PIL refuses a rectangle whose corners are out of order
        draw.rectangle((min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)), outline=BOX_COLOUR, width=2)
    return encode_png(thumb)


def numbered_names(name: str, count: int) -> list[str]:
    """Names of the images one input gave: `name` alone, or `name p1`, `name p2`... for pages and frames."""
    return [name] if count == 1 else [f"{name} p{index}" for index in range(1, count + 1)]
