"""Tests for screener.prompts, with the real espeak-ng.

The audio checks use only the standard library: ``wave`` to read, a Goertzel filter for
frequencies, and an independent G.711 decoder, so they do not trust the code under test.
"""

from __future__ import annotations

import array
import logging
import math
import os
import shutil
import struct
import sys
import wave
from pathlib import Path

import pytest

from screener import prompts
from screener.errors import ScreenerError
from screener.prompts import (
    PromptError,
    PromptSourceError,
    SynthesizerMissingError,
    build_prompts,
    decode_wav,
    encode,
    load_sources,
    normalise,
    prompts_build_command,
    sit_tone,
)

SHIPPED_SOURCES = Path(__file__).resolve().parent.parent / "prompts"
RATE = prompts.SAMPLE_RATE
LANGS = ("en", "zh")
CHALLENGES = tuple(f"challenge-{digit}" for digit in range(10))
# what extensions_screener.conf plays (written out, not read from the code under test)
NAMES = ("analysis-enter", "analysis-complete", "line-fault", *CHALLENGES)
FORMATS = ("wav", "ulaw", "alaw")
EXPECTED = {
    *(
        f"sounds/{lang}/screener/{name}.{fmt}"
        for lang in LANGS
        for name in NAMES
        for fmt in FORMATS
    ),
    *(
        f"moh/screener-analysis-{lang}/{name}.{fmt}"
        for lang in LANGS
        for name in ("1-analysis-enter", "2-sit")
        for fmt in FORMATS
    ),
}
SIT = "moh/screener-analysis-en/2-sit"


# --- stdlib audio helpers ---------------------------------------------------------------------


def read_wav(path: Path) -> tuple[wave._wave_params, list[int]]:
    with wave.open(str(path), "rb") as w:
        params = w.getparams()
        frames = w.readframes(w.getnframes())
    assert params.sampwidth == 2
    samples = array.array("h")
    samples.frombytes(frames)
    if sys.byteorder == "big":
        samples.byteswap()
    return params, samples.tolist()


def write_wav(path: Path, rate: int, width: int, channels: list[list[float]]) -> None:
    """Write integer PCM from per-channel float samples in -1..1."""
    path.parent.mkdir(parents=True, exist_ok=True)
    full = 2 ** (8 * width - 1) - 1
    out = bytearray()
    for frame in zip(*channels, strict=True):
        for value in frame:
            sample = round(value * full)
            if width == 1:
                out.append(sample + 128)  # 8-bit WAV is unsigned
            else:
                out += sample.to_bytes(width, "little", signed=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(len(channels))
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(bytes(out))


def sine(freq: float, rate: int, seconds: float, amplitude: float) -> list[float]:
    return [amplitude * math.sin(2 * math.pi * freq * i / rate) for i in range(int(rate * seconds))]


def rms_dbfs(samples: list[int]) -> float:
    return 20 * math.log10(math.sqrt(sum(s * s for s in samples) / len(samples)) / 32768)


def goertzel(samples: list[int], rate: int, freq: float) -> float:
    coeff = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


def db(ratio: float) -> float:
    return 10 * math.log10(ratio)


def strip_zeros(samples: list[int]) -> tuple[int, list[int], int]:
    start = next(i for i, s in enumerate(samples) if s)
    end = len(samples) - next(i for i, s in enumerate(reversed(samples)) if s)
    return start, samples[start:end], len(samples) - end


def ulaw_decode(code: int) -> int:
    code = ~code & 0xFF
    magnitude = ((((code & 0x0F) << 3) + 0x84) << ((code >> 4) & 0x07)) - 0x84
    return -magnitude if code & 0x80 else magnitude


def alaw_decode(code: int) -> int:
    code ^= 0x55
    segment = (code >> 4) & 0x07
    magnitude = ((code & 0x0F) << 4) + 8
    if segment:
        magnitude = (magnitude + 0x100) << (segment - 1)
    return magnitude if code & 0x80 else -magnitude


def snr_db(reference: list[int], decoded: list[int]) -> float:
    noise = sum((a - b) ** 2 for a, b in zip(reference, decoded, strict=True))
    return db(sum(a * a for a in reference) / noise)


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def espeak_ng() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("espeak-ng is missing and CI=true: run scripts/setup.sh")
        pytest.skip("espeak-ng is not installed")
    return path


def copy_sources(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(SHIPPED_SOURCES / "prompts.toml", directory / "prompts.toml")
    return directory


@pytest.fixture(scope="module")
def built(espeak_ng: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    sources = copy_sources(tmp_path_factory.mktemp("sources"))
    out = tmp_path_factory.mktemp("asterisk")
    return out, build_prompts(sources, out)


def prompt_paths(out: Path, fmt: str) -> list[Path]:
    return [out / f"sounds/{lang}/screener/{name}.{fmt}" for lang in LANGS for name in NAMES]


# --- the shipped build ------------------------------------------------------------------------


def test_build_writes_exactly_the_asterisk_layout(built: tuple[Path, list[Path]]) -> None:
    out, written = built
    assert {p.relative_to(out).as_posix() for p in written} == EXPECTED
    assert len(written) == len(EXPECTED)
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert on_disk == EXPECTED  # no temporary files left behind


def test_wav_files_are_what_asterisk_format_wav_reads(built: tuple[Path, list[Path]]) -> None:
    out, _ = built
    for path in [*prompt_paths(out, "wav"), out / f"{SIT}.wav"]:
        raw = path.read_bytes()
        assert raw[:4] == b"RIFF" and raw[8:12] == b"WAVE" and raw[12:16] == b"fmt "
        fmt_size, tag, channels, rate, byte_rate, align, bits = struct.unpack(
            "<IHHIIHH", raw[16:36]
        )
        assert (fmt_size, tag, channels, rate, byte_rate, align, bits) == (
            16,
            1,  # PCM
            1,
            8000,
            16000,
            2,
            16,
        ), path
        assert raw[36:40] == b"data"
        assert struct.unpack("<I", raw[40:44])[0] == len(raw) - 44
        params, _ = read_wav(path)
        assert (params.nchannels, params.sampwidth, params.framerate) == (1, 2, 8000)


def test_prompt_durations_are_sane(built: tuple[Path, list[Path]]) -> None:
    out, _ = built
    seconds = {}
    for path in prompt_paths(out, "wav"):
        params, _ = read_wav(path)
        seconds[path] = params.nframes / RATE
        # the line-fault act ("Hello? Hello? Sorry, the line is faulty...") is the longest text:
        # cmn speaks it in just over 8 s
        longest = 10.0 if path.stem == "line-fault" else 8.0
        assert 1.0 < seconds[path] < longest, path
    for lang in LANGS:
        enter = seconds[out / f"sounds/{lang}/screener/analysis-enter.wav"]
        complete = seconds[out / f"sounds/{lang}/screener/analysis-complete.wav"]
        assert enter > complete  # the longer sentence
        fault = seconds[out / f"sounds/{lang}/screener/line-fault.wav"]
        challenges = [seconds[out / f"sounds/{lang}/screener/{n}.wav"] for n in CHALLENGES]
        assert fault > max(challenges)  # the longer sentence


def test_prompts_are_normalised_with_lead_in_and_tail(built: tuple[Path, list[Path]]) -> None:
    out, _ = built
    for path in prompt_paths(out, "wav"):
        _, samples = read_wav(path)
        lead, speech, tail = strip_zeros(samples)
        assert lead >= prompts.LEAD_IN_MS * RATE // 1000, path
        assert tail >= prompts.TAIL_MS * RATE // 1000, path
        assert rms_dbfs(speech) == pytest.approx(prompts.TARGET_DBFS, abs=0.5), path
        peak = 20 * math.log10(max(abs(s) for s in speech) / 32768)
        assert peak <= prompts.PEAK_CEILING_DBFS + 0.01, path


def test_sit_rises_through_the_three_frequencies_then_is_silent(
    built: tuple[Path, list[Path]],
) -> None:
    out, _ = built
    params, samples = read_wav(out / f"{SIT}.wav")
    segment = prompts.SIT_SEGMENT_MS * RATE // 1000
    assert segment == 2640  # 330 ms
    assert params.nframes == 3 * segment + prompts.SIT_SILENCE_MS * RATE // 1000
    frequencies = (913.8, 1370.6, 1776.7)
    skip = 20 * RATE // 1000  # leave out the ramps
    for i, expected in enumerate(frequencies):
        window = samples[i * segment + skip : (i + 1) * segment - skip]
        power = [goertzel(window, RATE, f) for f in frequencies]
        others = [p for j, p in enumerate(power) if j != i]
        assert db(power[i] / max(others)) > 30, (expected, power)
        assert rms_dbfs(window) == pytest.approx(prompts.SIT_LEVEL_DBFS, abs=0.3)
    assert not any(samples[3 * segment :])


def test_g711_files_have_one_byte_per_sample_and_decode_to_the_wav(
    built: tuple[Path, list[Path]],
) -> None:
    out, _ = built
    for wav in [*prompt_paths(out, "wav"), out / f"{SIT}.wav"]:
        params, samples = read_wav(wav)
        for fmt, decode in (("ulaw", ulaw_decode), ("alaw", alaw_decode)):
            raw = wav.with_suffix(f".{fmt}").read_bytes()
            assert len(raw) == params.nframes, wav
            assert snr_db(samples, [decode(b) for b in raw]) > 30, (wav, fmt)
    # digital silence is 0xFF in mu-law and 0xD5 in A-law: catches a swapped or inverted encoder
    assert set(out.joinpath(f"{SIT}.ulaw").read_bytes()[-8000:]) == {0xFF}
    assert set(out.joinpath(f"{SIT}.alaw").read_bytes()[-8000:]) == {0xD5}


def test_rebuild_is_deterministic(built: tuple[Path, list[Path]], tmp_path: Path) -> None:
    out, _ = built
    sources = copy_sources(tmp_path / "sources")
    again = build_prompts(sources, tmp_path / "out", languages=["en"])
    for path in again:
        assert path.read_bytes() == (out / path.relative_to(tmp_path / "out")).read_bytes()


# --- studio recordings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "width", "channels"),
    [(44100, 2, 2), (48000, 3, 1), (16000, 2, 1), (8000, 1, 1)],
    ids=["44k1-16bit-stereo", "48k-24bit-mono", "16k-16bit-mono", "8k-8bit-mono"],
)
def test_a_studio_recording_replaces_espeak(
    espeak_ng: str, tmp_path: Path, rate: int, width: int, channels: int
) -> None:
    sources = copy_sources(tmp_path / "sources")
    # 0.3 s of silence, 1.2 s of a 1 kHz tone plus a 6 kHz tone (which must not fold back to
    # 8000 - 6000 = 2 kHz), 0.4 s of silence; quiet, so normalisation has to lift it.
    high = 6000 if rate > 12000 else 0
    pad = [0.0] * int(rate * 0.3)
    low_tone = sine(1000, rate, 1.2, 0.05)
    high_tone = sine(high, rate, 1.2, 0.05) if high else [0.0] * len(low_tone)
    signal = (
        pad + [a + b for a, b in zip(low_tone, high_tone, strict=True)] + pad + pad[: rate // 10]
    )
    write_wav(sources / "recordings/en/analysis-enter.wav", rate, width, [signal] * channels)
    out = tmp_path / "out"
    written = build_prompts(sources, out, languages=("en",))

    assert {p.relative_to(out).as_posix() for p in written} == {
        e for e in EXPECTED if not e.startswith(("sounds/zh/", "moh/screener-analysis-zh/"))
    }
    _, samples = read_wav(out / "sounds/en/screener/analysis-enter.wav")
    lead, body, tail = strip_zeros(samples)
    assert len(body) / RATE == pytest.approx(1.2, abs=0.03)  # espeak's sentence is ~4 s
    assert lead >= prompts.LEAD_IN_MS * RATE // 1000
    assert tail >= prompts.TAIL_MS * RATE // 1000
    middle = body[len(body) // 4 : 3 * len(body) // 4]
    assert db(goertzel(middle, RATE, 1000) / goertzel(middle, RATE, 2000)) > 40  # no alias
    assert rms_dbfs(body) == pytest.approx(prompts.TARGET_DBFS, abs=0.5)
    # the other prompt still comes from espeak-ng
    params, _ = read_wav(out / "sounds/en/screener/analysis-complete.wav")
    assert params.nframes / RATE > 1.0


def test_recordings_alone_need_no_espeak(tmp_path: Path) -> None:
    sources = copy_sources(tmp_path / "sources")
    for name in NAMES:
        write_wav(sources / f"recordings/en/{name}.wav", 22050, 2, [sine(440, 22050, 0.5, 0.3)])
    written = build_prompts(sources, tmp_path / "out", languages=["en"], espeak="no-such-espeak")
    assert len(written) == 45  # 13 prompts + the music class's prompt and tone, 3 formats each


def test_a_misnamed_recording_is_reported(
    espeak_ng: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sources = copy_sources(tmp_path / "sources")
    typo = sources / "recordings/en/analysis-entre.wav"
    write_wav(typo, 8000, 2, [sine(440, 8000, 0.2, 0.3)])
    with caplog.at_level(logging.WARNING, logger="screener.prompts"):
        build_prompts(sources, tmp_path / "out", languages=["en"])
    assert any(
        "recording ignored" in r.getMessage() and str(typo) in r.getMessage()
        for r in caplog.records
    )


def test_an_unreadable_recording_is_a_clear_error(tmp_path: Path) -> None:
    sources = copy_sources(tmp_path / "sources")
    bad = sources / "recordings/en/analysis-enter.wav"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"ID3 this is an mp3 renamed to .wav")
    with pytest.raises(PromptError, match=r"analysis-enter\.wav: not a PCM WAV file"):
        build_prompts(sources, tmp_path / "out", languages=["en"], espeak="no-such-espeak")
    assert not (tmp_path / "out").exists()  # nothing written before everything rendered


def test_a_silent_recording_is_a_clear_error(tmp_path: Path) -> None:
    sources = copy_sources(tmp_path / "sources")
    write_wav(sources / "recordings/en/analysis-enter.wav", 8000, 2, [[0.0] * 4000])
    with pytest.raises(
        PromptError, match=r"en/analysis-enter from recording .*: the audio is silent"
    ):
        build_prompts(sources, tmp_path / "out", languages=["en"], espeak="no-such-espeak")


# --- espeak-ng failures -----------------------------------------------------------------------


def test_missing_espeak_on_path_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sources = copy_sources(tmp_path / "sources")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(SynthesizerMissingError, match="espeak-ng not found on PATH") as info:
        build_prompts(sources, tmp_path / "out")
    assert "apt-get install espeak-ng" in str(info.value)
    assert "recordings/<lang>/<name>.wav" in str(info.value)
    assert isinstance(info.value, ScreenerError)
    assert not (tmp_path / "out").exists()


def test_missing_espeak_as_a_parameter(tmp_path: Path) -> None:
    sources = copy_sources(tmp_path / "sources")
    with pytest.raises(SynthesizerMissingError, match="/nonexistent/espeak-ng not found"):
        build_prompts(sources, tmp_path / "out", espeak="/nonexistent/espeak-ng")


def test_an_unknown_voice_is_a_clear_error(espeak_ng: str, tmp_path: Path) -> None:
    with pytest.raises(PromptError, match=r"espeak-ng failed for voice 'xx-nosuch' \(exit 1\)"):
        prompts.synthesize("hello", "xx-nosuch")


def fake_espeak(tmp_path: Path, body: str) -> str:
    script = tmp_path / "fake-espeak"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return str(script)


def test_a_hung_espeak_is_killed_after_the_timeout(tmp_path: Path) -> None:
    espeak = tmp_path / "hung-espeak"
    espeak.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(30)\n")
    espeak.chmod(0o755)
    with pytest.raises(PromptError, match=r"took over 0\.3 s"):
        prompts.synthesize("hello", "en-us", espeak=str(espeak), timeout=0.3)


def test_an_espeak_that_writes_nothing_is_an_error(tmp_path: Path) -> None:
    espeak = fake_espeak(tmp_path, "exit 0")
    with pytest.raises(PromptError, match="wrote no audio"):
        prompts.synthesize("hello", "en-us", espeak=espeak)


def test_an_espeak_that_cannot_start_is_an_error(tmp_path: Path) -> None:
    espeak = tmp_path / "broken-espeak"
    espeak.write_text("#!/nonexistent/interpreter\n")
    espeak.chmod(0o755)
    with pytest.raises(PromptError, match=r"cannot run .*broken-espeak"):
        prompts.synthesize("hello", "en-us", espeak=str(espeak))


def test_text_starting_with_a_dash_is_spoken_not_parsed(espeak_ng: str) -> None:
    audio = prompts.synthesize("-v is not an option here", "en-us")
    assert audio.duration_seconds > 0.5


# --- sources ----------------------------------------------------------------------------------


def test_required_prompts_are_what_the_dialplan_plays() -> None:
    assert prompts.REQUIRED_PROMPTS == NAMES


def test_the_shipped_sources_are_valid() -> None:
    sources = load_sources(SHIPPED_SOURCES / "prompts.toml")
    assert {(s.name, s.language) for s in sources} == {(n, lang) for n in NAMES for lang in LANGS}
    voices = {s.language: s.voice for s in sources}
    assert voices == {"en": "en-us", "zh": "cmn"}
    zh_enter = next(s for s in sources if s.language == "zh" and s.name == "analysis-enter")
    assert zh_enter.text == "您已进入自动呼叫分析系统\uff0c请稍候。"  # \uff0c: fullwidth comma


ENTRY = 'voice = "en-us"\ntext = "Hello."\n'


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("not = [toml", "cannot read"),
        ("[other]\nx = 1\n", "no [prompts.<name>.<lang>] tables"),
        ('[prompts."../evil".en]\n' + ENTRY, "prompt name '../evil' must match"),
        ('[prompts]\nanalysis-enter = "x"\n', "prompts.analysis-enter: expected one table"),
        ('[prompts.analysis-enter]\nen = "x"\n', "expected a table with text and voice"),
        ('[prompts.analysis-enter."../x"]\n' + ENTRY, "language must look like"),
        ('[prompts.analysis-enter.en]\nvoice = "en-us"\n', "analysis-enter.en.text"),
        ('[prompts.analysis-enter.en]\nvoice = "-w"\ntext = "x"\n', "analysis-enter.en.voice"),
        ("[prompts.analysis-enter.en]\n" + ENTRY + "speed = 1000\n", "en.speed: words per"),
        ("[prompts.analysis-enter.en]\n" + ENTRY + "speed = true\n", "en.speed: words per"),
        ("[prompts.analysis-enter.en]\n" + ENTRY + "pitch = 1\n", "unknown key(s) pitch"),
        (
            "[prompts.analysis-enter.en]\n" + ENTRY,
            "prompts.analysis-complete.en: missing (the dialplan plays it)",
        ),
    ],
)
def test_invalid_sources_are_rejected(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "prompts.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(PromptSourceError) as info:
        load_sources(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_every_source_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "prompts.toml"
    path.write_text('[prompts.analysis-enter.en]\nvoice = "-x"\ntext = ""\n', encoding="utf-8")
    with pytest.raises(PromptSourceError) as info:
        load_sources(path)
    problems = info.value.problems
    assert len(problems) == 14  # text, voice, and the 12 other prompts the dialplan plays missing
    assert sum("en.text" in p for p in problems) == 1
    assert sum("en.voice" in p for p in problems) == 1
    missing = {n for n in NAMES if any(f"prompts.{n}.en: missing" in p for p in problems)}
    assert missing == set(NAMES) - {"analysis-enter"}


def test_missing_sources_file(tmp_path: Path) -> None:
    with pytest.raises(PromptSourceError, match="cannot read"):
        build_prompts(tmp_path, tmp_path / "out")


def test_an_unknown_language_is_rejected(tmp_path: Path) -> None:
    sources = copy_sources(tmp_path / "sources")
    with pytest.raises(PromptSourceError, match=r"language\(s\) fr not in prompts.toml"):
        build_prompts(sources, tmp_path / "out", languages=["en", "fr"])


def test_languages_limit_the_build(espeak_ng: str, tmp_path: Path) -> None:
    sources = copy_sources(tmp_path / "sources")
    out = tmp_path / "out"
    written = build_prompts(sources, out, languages=["zh"])
    assert {p.relative_to(out).as_posix() for p in written} == {
        e for e in EXPECTED if not e.startswith(("sounds/en/", "moh/screener-analysis-en/"))
    }


# --- pieces -----------------------------------------------------------------------------------


def test_sit_tone_shape() -> None:
    tone = sit_tone()
    assert (tone.frame_rate, tone.channels, tone.sample_width) == (8000, 1, 2)
    assert len(tone) == 3 * 330 + 1000


def test_encode_refuses_audio_not_yet_converted(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    write_wav(path, 16000, 2, [sine(440, 16000, 0.1, 0.3)])
    with pytest.raises(ValueError, match="expected 8 kHz mono 16-bit"):
        encode(decode_wav(path.read_bytes(), what="test"))


def test_decode_wav_rejects_an_empty_wav(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    write_wav(path, 8000, 2, [[]])
    with pytest.raises(PromptError, match="holds no audio"):
        decode_wav(path.read_bytes(), what="empty.wav")


def test_normalise_stops_at_the_peak_ceiling(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # one loud click in a quiet hum: reaching the RMS target would clip the click
    samples = sine(300, 8000, 1.0, 0.001)
    samples[4000] = 0.5
    path = tmp_path / "click.wav"
    write_wav(path, 8000, 2, [samples])
    with caplog.at_level(logging.WARNING, logger="screener.prompts"):
        result = normalise(decode_wav(path.read_bytes(), what="click"))
    assert result.max_dBFS == pytest.approx(prompts.PEAK_CEILING_DBFS, abs=0.01)
    assert result.dBFS < prompts.TARGET_DBFS - 3
    assert any("peak-limited" in r.getMessage() for r in caplog.records)


def test_a_dangling_symlink_in_the_output_gets_a_hint(tmp_path: Path) -> None:
    sources = copy_sources(tmp_path / "sources")
    for name in NAMES:
        write_wav(sources / f"recordings/en/{name}.wav", 8000, 2, [sine(440, 8000, 0.3, 0.3)])
    out = tmp_path / "out"
    (out / "sounds").mkdir(parents=True)
    (out / "sounds/en").symlink_to("/nonexistent/asterisk-prompt-en")
    with pytest.raises(PromptError, match="is a symlink to /nonexistent/asterisk-prompt-en"):
        build_prompts(sources, out, languages=["en"], espeak="no-such-espeak")


def test_an_unwritable_output_is_a_clear_error(tmp_path: Path) -> None:
    sources = copy_sources(tmp_path / "sources")
    for name in NAMES:
        write_wav(sources / f"recordings/en/{name}.wav", 8000, 2, [sine(440, 8000, 0.3, 0.3)])
    out = tmp_path / "out"
    out.write_text("a file, not a directory")
    with pytest.raises(PromptError, match=r"cannot write to .*out/sounds/en/screener") as info:
        build_prompts(sources, out, languages=["en"], espeak="no-such-espeak")
    assert "symlink" not in str(info.value)


# --- the CLI entry point ----------------------------------------------------------------------


def test_command_prints_what_it_wrote(
    espeak_ng: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sources = copy_sources(tmp_path / "sources")
    out = tmp_path / "out"
    assert prompts_build_command(sources, out, ("en",)) == 0
    printed = capsys.readouterr().out.splitlines()
    assert str(out / "sounds/en/screener/analysis-enter.wav") in printed
    assert str(out / f"{SIT}.alaw") in printed
    assert str(out / "sounds/en/screener/line-fault.ulaw") in printed
    assert str(out / "sounds/en/screener/challenge-9.alaw") in printed
    assert printed[-1] == f"45 files written under {out}"


def test_command_exit_status_for_bad_sources(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert prompts_build_command(tmp_path, tmp_path / "out", ()) == 2
    err = capsys.readouterr().err
    assert err.startswith("screener prompts build: ") and err.count("\n") == 1


def test_command_exit_status_without_espeak(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sources = copy_sources(tmp_path / "sources")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert prompts_build_command(sources, tmp_path / "out", ()) == 1
    assert "espeak-ng not found on PATH" in capsys.readouterr().err


def test_the_analysis_music_class_starts_with_the_entry_prompt(
    built: tuple[Path, list[Path]],
) -> None:
    """sort=alpha + loop_last: the class plays the entry prompt first, then loops the tone."""
    built, _ = built
    for lang in LANGS:
        folder = built / f"moh/screener-analysis-{lang}"
        names = sorted(p.stem for p in folder.glob("*.wav"))
        assert names == ["1-analysis-enter", "2-sit"]
        same = built / f"sounds/{lang}/screener/analysis-enter.wav"
        assert (folder / "1-analysis-enter.wav").read_bytes() == same.read_bytes()
