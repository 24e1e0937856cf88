"""The report's heatmap as a PNG (the only module that imports Pillow).

Rows are days, columns hours of day; a cell's colour goes from white (no flags) to dark red (the
busiest hour of the period), with the day's total at the end of the row and a scale underneath.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

CELL_W = 26
CELL_H = 16
LEFT = 110
TOP = 40
RIGHT = 70
BOTTOM = 50


def _colour(n: int, peak: int) -> tuple[int, int, int]:
    if n == 0 or peak == 0:
        return (255, 255, 255)
    t = 0.15 + 0.85 * n / peak
    return (255 - int(115 * t), int(235 * (1 - t)), int(220 * (1 - t)))


def heatmap_png(heatmap: Mapping[str, Sequence[int]], title: str, path: Path) -> Path:
    """Draw ``heatmap`` (ISO day -> 24 hourly counts) to ``path``.

    Raises:
        OSError: the file cannot be written.
    """
    days = list(heatmap)
    peak = max((max(row) for row in heatmap.values()), default=0)
    width = LEFT + 24 * CELL_W + RIGHT
    height = TOP + max(len(days), 1) * CELL_H + BOTTOM
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.text((8, 8), title, fill="black", font=font)
    for h in range(24):
        draw.text((LEFT + h * CELL_W + 6, TOP - 14), f"{h:02d}", fill="black", font=font)
    for i, day in enumerate(days):
        y = TOP + i * CELL_H
        label = f"{day} {datetime.fromisoformat(day).strftime('%a')}"
        draw.text((8, y + 2), label, fill="black", font=font)
        row = heatmap[day]
        for h, n in enumerate(row):
            x = LEFT + h * CELL_W
            draw.rectangle((x, y, x + CELL_W - 2, y + CELL_H - 2), fill=_colour(n, peak))
        draw.text((LEFT + 24 * CELL_W + 6, y + 2), str(sum(row)), fill="black", font=font)
    y = TOP + max(len(days), 1) * CELL_H + 12
    draw.text((8, y), "flags/hour", fill="black", font=font)
    for k in range(11):
        n = round(peak * k / 10)
        x = LEFT + k * 2 * CELL_W
        draw.rectangle((x, y, x + 2 * CELL_W - 2, y + CELL_H - 2), fill=_colour(n, peak))
        if k in (0, 5, 10):
            draw.text((x + 2, y + CELL_H + 2), str(n), fill="black", font=font)
    image.save(path, format="PNG")
    return path
