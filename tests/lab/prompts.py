"""The screener prompts and the analysis tone, installed into a lab Asterisk's data directory.

:func:`install_lab_prompts` runs the real builder,
``screener.prompts.build_prompts(sources, out_dir)`` (``sounds/<lang>/screener/...`` and the
analysis queue's ``moh/screener-analysis-<lang>/`` classes).
"""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path

from tests.lab import REPO

PROMPT_SOURCES = REPO / "prompts"
RATE = 8000


def install_lab_prompts(out_dir: Path) -> None:
    """Build the real screener prompts into ``out_dir`` (an Asterisk data dir)."""
    from screener.prompts import build_prompts

    build_prompts(PROMPT_SOURCES, out_dir)


def write_lab_default_moh(data_dir: Path) -> None:
    """The hotline queues' hold music (class ``default``, not part of screener): a low hum."""
    folder = data_dir / "moh" / "lab-default"
    folder.mkdir(parents=True, exist_ok=True)
    write_wav(folder / "hum.wav", [(220.0, 1.0)], amplitude=2000)


def write_wav(path: Path, segments: list[tuple[float, float]], amplitude: int = 8000) -> None:
    """A WAV of sine segments ``(frequency_hz, seconds)``; frequency 0 is silence."""
    frames = bytearray()
    for freq, seconds in segments:
        for n in range(int(seconds * RATE)):
            sample = amplitude * math.sin(2 * math.pi * freq * n / RATE) if freq else 0.0
            frames += struct.pack("<h", int(sample))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(bytes(frames))
