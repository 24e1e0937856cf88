"""Tests for screener.charts: the report's heatmap as a PNG (read back with Pillow)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from screener import charts

WEEK = {f"2024-03-{d:02d}": [0] * 24 for d in range(4, 11)}


def cell_centre(day: int, hour: int) -> tuple[int, int]:
    return (
        charts.LEFT + hour * charts.CELL_W + charts.CELL_W // 2,
        charts.TOP + day * charts.CELL_H + charts.CELL_H // 2,
    )


def brightness(image: Image.Image, xy: tuple[int, int]) -> int:
    pixel = image.getpixel(xy)
    assert isinstance(pixel, tuple)
    return sum(pixel[:3])


def busy_week() -> dict[str, list[int]]:
    heat = {day: list(row) for day, row in WEEK.items()}
    heat["2024-03-06"][14] = 12  # the busiest hour
    heat["2024-03-06"][15] = 3
    heat["2024-03-04"][9] = 1
    return heat


def test_heatmap_png_is_a_png_of_the_expected_size(tmp_path: Path) -> None:
    out = charts.heatmap_png(busy_week(), "flags by day and hour", tmp_path / "heat.png")
    assert out == tmp_path / "heat.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as image:
        image.load()
        assert image.format == "PNG"
        assert image.mode == "RGB"
        assert image.size == (
            charts.LEFT + 24 * charts.CELL_W + charts.RIGHT,
            charts.TOP + 7 * charts.CELL_H + charts.BOTTOM,
        )
        assert image.size == (804, 202)


def test_a_busy_hour_is_darker_than_a_quiet_or_empty_one(tmp_path: Path) -> None:
    out = charts.heatmap_png(busy_week(), "t", tmp_path / "heat.png")
    with Image.open(out) as image:
        image.load()
        busiest = brightness(image, cell_centre(2, 14))
        busy = brightness(image, cell_centre(2, 15))
        quiet = brightness(image, cell_centre(0, 9))
        empty = brightness(image, cell_centre(0, 10))
        assert empty == 3 * 255  # white
        assert brightness(image, cell_centre(6, 23)) == 3 * 255
        assert busiest < busy < quiet < empty
        r, g, b = image.getpixel(cell_centre(2, 14))  # type: ignore[misc]
        assert r > g and r > b  # red, not grey


def test_an_empty_period_is_all_white_cells(tmp_path: Path) -> None:
    out = charts.heatmap_png(WEEK, "nothing", tmp_path / "empty.png")
    with Image.open(out) as image:
        image.load()
        for day in range(7):
            for hour in range(24):
                assert brightness(image, cell_centre(day, hour)) == 3 * 255


def test_one_day_and_a_long_period_change_the_height(tmp_path: Path) -> None:
    one = charts.heatmap_png({"2024-03-04": [1] * 24}, "t", tmp_path / "one.png")
    days = {f"2024-01-{d:02d}": [d] * 24 for d in range(1, 32)}
    month = charts.heatmap_png(days, "t", tmp_path / "month.png")
    with Image.open(one) as a, Image.open(month) as b:
        assert a.size[1] == charts.TOP + charts.CELL_H + charts.BOTTOM
        assert b.size[1] == charts.TOP + 31 * charts.CELL_H + charts.BOTTOM
        b.load()
        # the last day is the busiest: its cells are darker than the first day's
        assert brightness(b, cell_centre(30, 0)) < brightness(b, cell_centre(0, 0))


def test_an_unwritable_path_raises_os_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        charts.heatmap_png(WEEK, "t", tmp_path / "missing" / "heat.png")
