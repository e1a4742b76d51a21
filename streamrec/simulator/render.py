"""Item images for the synthetic world: pattern, palette and shapes follow the item's topics,
so the pixels carry signal a model can learn (and an image encoder can pick up)."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image, ImageDraw

#: One palette per topic (background, foreground, accent), cycled past 12 topics.
PALETTES = (
    ((250, 235, 200), (200, 60, 30), (90, 40, 20)),     # warm kitchen
    ((20, 110, 40), (240, 240, 240), (10, 10, 10)),     # pitch
    ((5, 5, 30), (230, 230, 255), (120, 80, 200)),      # night sky
    ((40, 0, 60), (255, 200, 0), (255, 60, 160)),       # stage
    ((120, 180, 60), (255, 120, 180), (80, 50, 20)),    # garden
    ((60, 60, 60), (220, 20, 20), (200, 200, 200)),     # asphalt
    ((245, 220, 230), (30, 30, 30), (200, 150, 40)),    # runway
    ((120, 200, 240), (240, 220, 160), (20, 90, 160)),  # beach
    ((10, 10, 10), (0, 255, 120), (255, 0, 80)),        # neon
    ((230, 240, 230), (20, 90, 40), (120, 120, 120)),   # ledger
    ((200, 170, 130), (90, 60, 30), (250, 250, 250)),   # fur
    ((30, 60, 120), (255, 140, 0), (250, 250, 250)),    # gym
)
PATTERNS = ("stripes", "checks", "dots", "rings", "diagonal", "waves")


def render_item(topics: np.ndarray, seed: int, size: int = 64) -> Image.Image:
    """An image whose palette comes from the main topic, pattern from the second, and whose
    shapes (count, size) from how concentrated the topics are."""
    rng = np.random.default_rng(seed)
    order = np.argsort(-topics)
    main, second = int(order[0]), int(order[1])
    bg, fg, accent = PALETTES[main % len(PALETTES)]
    im = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(im)
    pattern = PATTERNS[second % len(PATTERNS)]
    step = 8 + (main % 3) * 4
    for k in range(-size, 2 * size, step):
        if pattern == "stripes":
            d.rectangle([k, 0, k + step // 2, size], fill=fg)
        elif pattern == "diagonal":
            d.line([k, 0, k + size, size], fill=fg, width=step // 3)
        elif pattern == "waves":
            d.arc([k, size // 3, k + step * 2, size // 3 + step], 0, 180, fill=fg, width=3)
            d.arc([k, 2 * size // 3, k + step * 2, 2 * size // 3 + step], 180, 360, fill=fg, width=3)
    if pattern in ("checks", "dots", "rings"):
        for x in range(0, size, step):
            for y in range(0, size, step):
                if pattern == "checks" and (x // step + y // step) % 2 == 0:
                    d.rectangle([x, y, x + step, y + step], fill=fg)
                elif pattern == "dots":
                    d.ellipse([x + 2, y + 2, x + step - 2, y + step - 2], fill=fg)
                elif pattern == "rings":
                    d.ellipse([x + 1, y + 1, x + step - 1, y + step - 1], outline=fg, width=2)
    for _ in range(1 + int(4 * topics[main])):
        r = int(rng.integers(size // 10, size // 4))
        cx, cy = rng.integers(r, size - r, 2)
        box = [cx - r, cy - r, cx + r, cy + r]
        (d.ellipse if main % 2 else d.rectangle)(box, fill=accent)
    return im


def to_base64_png(im: Image.Image) -> str:
    buf = io.BytesIO()
    im.save(buf, "PNG", optimize=False)
    return base64.b64encode(buf.getvalue()).decode()
