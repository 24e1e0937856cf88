"""Audio prompts for the analysis queue, built for Asterisk (``screener prompts build``).

Theory of operation: ``prompts/prompts.toml`` lists, for every prompt and language, the text and
the espeak-ng voice. For each entry the builder takes the admin's studio recording
(``prompts/recordings/<lang>/<name>.wav``) if there is one, or else asks espeak-ng to speak the
text. Either way the audio goes through the same chain: mono, 16-bit, band-limited to the
telephone band, resampled to 8 kHz, silence trimmed, loudness normalised, a short lead-in and
tail added. The special information tone (SIT) for the analysis queue's music on hold is
generated here. Everything is rendered in memory first, then written as ``.wav`` (8 kHz mono
16-bit PCM), ``.ulaw`` and ``.alaw`` (raw G.711), so that Asterisk can play whichever needs no
transcoding for the caller's codec. Layout under the output directory (Asterisk's data dir)::

    sounds/<lang>/screener/analysis-enter.{wav,ulaw,alaw}
    sounds/<lang>/screener/analysis-complete.{wav,ulaw,alaw}
    moh/screener-analysis-<lang>/1-analysis-enter.{wav,ulaw,alaw}
    moh/screener-analysis-<lang>/2-sit.{wav,ulaw,alaw}

The analysis queue's music on hold is one class per language (``musiconhold_screener.conf``:
``sort=alpha``, ``loop_last=yes``): the caller hears the "you have entered" prompt as soon as
they join the queue, then the tone, looped until the queue times out. So the caller joins the
queue at once and the prompt never repeats.

Levels are in dBFS as pydub measures them: RMS relative to a full-scale square wave, so a
full-scale sine reads -3.0 dBFS. G.711 overloads at +3.17 dBm0 (mu-law) / +3.14 dBm0 (A-law),
hence 0 dBm0 is about -6.2 dBFS here.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import warnings
import wave
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from screener.errors import ScreenerError

with warnings.catch_warnings():
    # Python 3.11-3.12 deprecate the stdlib audioop (audioop-lts provides it on 3.13+), and pydub
    # warns at import when ffmpeg is absent; neither matters: only WAV and raw G.711 are used here.
    warnings.filterwarnings(
        "ignore", message="'audioop' is deprecated", category=DeprecationWarning
    )
    warnings.filterwarnings("ignore", message="Couldn't find ff", category=RuntimeWarning)
    import audioop

    from pydub import AudioSegment
    from pydub.exceptions import CouldntDecodeError
    from pydub.generators import Sine
    from pydub.silence import detect_leading_silence

logger = logging.getLogger(__name__)

SOURCES_FILE = "prompts.toml"
RECORDINGS_DIR = "recordings"
SOUNDS_SUBDIR = "screener"  # Playback(screener/<name>) finds sounds/<lang>/screener/<name>.*
# musiconhold_screener.conf: [screener-analysis-<lang>] directory=moh/screener-analysis-<lang>,
# sort=alpha, loop_last=yes: the entry prompt plays once, then the tone loops.
MOH_DIR = Path("moh")
MOH_CLASS_PREFIX = "screener-analysis-"
MOH_ENTER_NAME = "1-analysis-enter"
SIT_NAME = "2-sit"
MOH_ENTER_PROMPT = "analysis-enter"
REQUIRED_PROMPTS = (  # what extensions_screener.conf plays
    "analysis-enter",
    "analysis-complete",
    "line-fault",
    *(f"challenge-{digit}" for digit in range(10)),
)

SAMPLE_RATE = 8000
SAMPLE_WIDTH = 2

# Speech loudness (RMS of the trimmed speech). espeak-ng's speech has a crest factor of 17-19 dB
# after band-limiting, so -20 dBFS RMS puts its peaks between -3 and -1.5 dBFS with no limiting;
# -16 dBFS would need clipping or a limiter. That is about -14 dBm0, a usual level for IVR prompts.
TARGET_DBFS = -20.0
# Never raise a peak above this: mu-law/A-law overload at full scale and some gateways add gain.
PEAK_CEILING_DBFS = -1.0
# Trim leading/trailing audio quieter than this, relative to the recording's own peak.
TRIM_BELOW_PEAK_DB = 45.0
# A short lead-in keeps the first syllable from being lost while the channel's media path settles
# (the caller has just been redirected out of a bridge); the tail is a pause before the next sound.
LEAD_IN_MS = 150
TAIL_MS = 300

# Anti-alias filter before resampling to 8 kHz: flat to 3.4 kHz (the telephone band), at least
# 50 dB down from 4 kHz (Nyquist at 8 kHz) so sibilants do not fold back into the band.
PASSBAND_HZ = 3400.0
STOPBAND_HZ = 4000.0

# Special information tone (ITU-T E.180 / Q.35). Frequencies are the Telcordia values, each
# inside the ITU windows of 950 +/- 50, 1400 +/- 50 and 1800 +/- 50 Hz.
SIT_FREQUENCIES_HZ = (913.8, 1370.6, 1776.7)
SIT_SEGMENT_MS = 330  # E.180 nominal, of 330 +/- 70 ms (Telcordia's 274/380 ms fall inside it)
SIT_RAMP_MS = 5  # ramps inside each segment instead of a gap: no click from the phase jump
SIT_SILENCE_MS = 1000  # E.180's silent interval (about 1 s) before the sequence repeats
SIT_LEVEL_DBFS = -22.0  # about -16 dBm0 per segment, the default SIT level of Linksys/Poly ATAs

ESPEAK = "espeak-ng"
ESPEAK_TIMEOUT_S = 30.0
DEFAULT_SPEED_WPM = 150  # espeak-ng's default of 175 words/minute is hurried on a phone line

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_LANGUAGE_RE = re.compile(r"[a-z]{2,3}(_[A-Za-z0-9]{2,8})?")  # Asterisk style: en, zh, pt_BR
_VOICE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+-]{0,63}")
_MAX_TEXT_CHARS = 1000
_SPEED_RANGE = (80, 450)  # what espeak-ng's -s accepts


class PromptError(ScreenerError):
    """Building the prompts failed (synthesis, a recording, or writing the files)."""


class PromptSourceError(PromptError):
    """``prompts.toml`` is missing or invalid. ``problems`` lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class SynthesizerMissingError(PromptError):
    """espeak-ng is not installed (or not on PATH) but a prompt has no studio recording."""


@dataclass(frozen=True, slots=True)
class PromptSource:
    """One prompt in one language: what espeak-ng says, unless a recording replaces it."""

    name: str
    language: str
    text: str
    voice: str
    speed: int = DEFAULT_SPEED_WPM


def load_sources(path: Path) -> list[PromptSource]:
    """Read and validate ``prompts.toml``.

    Raises:
        PromptSourceError: the file is missing, is not TOML, or has invalid entries (all listed).
    """
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise PromptSourceError([f"cannot read {path}: {e}"]) from e
    table = doc.get("prompts")
    if not isinstance(table, dict) or not table:
        raise PromptSourceError([f"{path}: no [prompts.<name>.<lang>] tables"])
    problems: list[str] = []
    sources: list[PromptSource] = []
    declared: dict[str, set[str]] = {}  # language -> prompt names, valid entries or not
    for name, languages in table.items():
        if not _NAME_RE.fullmatch(name):
            problems.append(f"prompt name {name!r} must match {_NAME_RE.pattern}")
        elif not isinstance(languages, dict) or not languages:
            problems.append(f"prompts.{name}: expected one table per language")
        else:
            for language, entry in languages.items():
                declared.setdefault(language, set()).add(name)
                sources.extend(_parse_entry(name, language, entry, problems))
    for language, names in sorted(declared.items()):
        problems.extend(
            f"prompts.{required}.{language}: missing (the dialplan plays it)"
            for required in REQUIRED_PROMPTS
            if required not in names and _LANGUAGE_RE.fullmatch(language)
        )
    if problems:
        raise PromptSourceError([f"{path}: {p}" for p in problems])
    return sources


def _parse_entry(
    name: str, language: str, entry: object, problems: list[str]
) -> list[PromptSource]:
    where = f"prompts.{name}.{language}"
    if not _LANGUAGE_RE.fullmatch(language):
        problems.append(f"{where}: language must look like 'en' or 'pt_BR'")
        return []
    if not isinstance(entry, dict):
        problems.append(f"{where}: expected a table with text and voice")
        return []
    found = len(problems)
    unknown = sorted(set(entry) - {"text", "voice", "speed"})
    if unknown:
        problems.append(f"{where}: unknown key(s) {', '.join(unknown)}")
    text, voice, speed = (
        entry.get("text"),
        entry.get("voice"),
        entry.get("speed", DEFAULT_SPEED_WPM),
    )
    if not isinstance(text, str) or not text.strip() or len(text) > _MAX_TEXT_CHARS:
        problems.append(f"{where}.text: a non-empty string of at most {_MAX_TEXT_CHARS} characters")
    if not isinstance(voice, str) or not _VOICE_RE.fullmatch(voice):
        problems.append(f"{where}.voice: an espeak-ng voice name such as 'en-us' or 'cmn'")
    if not _is_speed(speed):
        problems.append(f"{where}.speed: words per minute, {_SPEED_RANGE[0]}..{_SPEED_RANGE[1]}")
    if len(problems) > found:
        return []
    return [PromptSource(name, language, str(text).strip(), str(voice), int(speed))]


def _is_speed(value: Any) -> bool:
    low, high = _SPEED_RANGE
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def sit_tone(
    *,
    frequencies_hz: Sequence[float] = SIT_FREQUENCIES_HZ,
    segment_ms: int = SIT_SEGMENT_MS,
    silence_ms: int = SIT_SILENCE_MS,
    level_dbfs: float = SIT_LEVEL_DBFS,
) -> AudioSegment:
    """The special information tone, as one music-on-hold loop: three rising tones, then silence.

    Per ITU-T E.180 / Q.35 the tone is three segments of 950, 1400 and 1800 Hz (+/- 50 Hz), each
    330 +/- 70 ms, up to 30 ms apart, repeated after about a second of silence. Defaults: the
    Telcordia frequencies 913.8 / 1370.6 / 1776.7 Hz (inside those windows), 330 ms each (the
    nominal), back to back with 5 ms ramps inside each segment (no phase-jump click, no gap),
    then 1000 ms of silence; 1990 ms in all, which Asterisk's MOH repeats. Each segment is at
    ``level_dbfs`` RMS (-22 dBFS, about -16 dBm0). 8 kHz mono 16-bit, like the prompts.
    """
    tone = AudioSegment.silent(duration=0, frame_rate=SAMPLE_RATE)
    for freq in frequencies_hz:
        segment = Sine(freq, sample_rate=SAMPLE_RATE, bit_depth=8 * SAMPLE_WIDTH).to_audio_segment(
            duration=segment_ms
        )
        segment = segment.apply_gain(level_dbfs - segment.dBFS)
        tone += segment.fade_in(SIT_RAMP_MS).fade_out(SIT_RAMP_MS)
    return tone + AudioSegment.silent(duration=silence_ms, frame_rate=SAMPLE_RATE)


def synthesize(
    text: str,
    voice: str,
    *,
    speed: int = DEFAULT_SPEED_WPM,
    espeak: str = ESPEAK,
    timeout: float = ESPEAK_TIMEOUT_S,
) -> AudioSegment:
    """Speak ``text`` with espeak-ng and return its audio (22.05 kHz mono, as espeak-ng writes it).

    The text goes in on stdin as UTF-8, so a text starting with ``-`` is not read as an option
    and the locale does not matter. ``espeak`` is a command name looked up on PATH, or a path.

    Raises:
        SynthesizerMissingError: espeak-ng is not found.
        PromptError: espeak-ng failed (for example an unknown voice) or took over ``timeout`` s.
    """
    exe = shutil.which(espeak)
    if exe is None:
        raise SynthesizerMissingError(
            f"{espeak} not found on PATH: install it (apt-get install espeak-ng) or put studio "
            f"recordings in prompts/{RECORDINGS_DIR}/<lang>/<name>.wav"
        )
    with tempfile.TemporaryDirectory(prefix="screener-prompt-") as tmp:
        out = Path(tmp) / "speech.wav"
        cmd = [exe, "-v", voice, "-s", str(speed), "-b", "1", "--stdin", "-w", str(out)]
        logger.debug("espeak cmd=%s", cmd)
        try:
            proc = subprocess.run(
                cmd, input=text.encode("utf-8"), capture_output=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as e:
            raise PromptError(f"{espeak} took over {timeout:g} s (voice {voice!r})") from e
        except OSError as e:
            raise PromptError(f"cannot run {exe}: {e}") from e
        if proc.returncode != 0:
            stderr = proc.stderr.decode("utf-8", "replace").strip()
            raise PromptError(
                f"{espeak} failed for voice {voice!r} (exit {proc.returncode}): {stderr}"
            )
        try:
            data = out.read_bytes()
        except OSError as e:
            raise PromptError(f"{espeak} wrote no audio for voice {voice!r}") from e
    return decode_wav(data, what=f"{espeak} output (voice {voice!r})")


def decode_wav(data: bytes, *, what: str) -> AudioSegment:
    """Parse a PCM WAV file (8/16/24/32-bit integer samples, any rate, any channels).

    Raises:
        PromptError: not a WAV file pydub can read without ffmpeg (float WAV included).
    """
    try:
        segment = AudioSegment(data=data)
    except (CouldntDecodeError, ValueError, IndexError) as e:
        raise PromptError(f"{what}: not a PCM WAV file ({e}); save it as 16-bit PCM WAV") from e
    if not segment.frame_count():
        raise PromptError(f"{what}: the WAV file holds no audio")
    return segment


def to_telephony(segment: AudioSegment) -> AudioSegment:
    """Convert any audio to 8 kHz mono 16-bit, low-passed first so nothing aliases."""
    segment = segment.set_channels(1).set_sample_width(SAMPLE_WIDTH)
    if segment.frame_rate > SAMPLE_RATE:
        segment = AudioSegment(
            data=lowpass(segment.raw_data, segment.frame_rate),
            sample_width=SAMPLE_WIDTH,
            frame_rate=segment.frame_rate,
            channels=1,
        )
    return segment.set_frame_rate(SAMPLE_RATE)


def lowpass(
    data: bytes, rate: int, *, passband_hz: float = PASSBAND_HZ, stopband_hz: float = STOPBAND_HZ
) -> bytes:
    """Low-pass 16-bit mono PCM with a linear-phase FIR filter (windowed sinc, Hamming).

    pydub resamples with ``audioop.ratecv``, a linear interpolator with no anti-alias filter, so
    a 44.1 kHz recording's 4-11 kHz content would fold into the telephone band. The convolution
    runs one tap at a time over the whole buffer with audioop (C speed, no numpy), in 32-bit with
    12 dB of headroom so intermediate sums never clip. The output has the input's length and
    timing (the filter's delay is compensated).
    """
    taps = _fir_taps(rate, passband_hz, stopband_hz)
    half = len(taps) // 2
    wide = audioop.mul(audioop.lin2lin(data, SAMPLE_WIDTH, 4), 4, 0.25)
    padding = bytes(4 * half)
    padded = padding + wide + padding
    size = len(wide)
    acc = bytes(size)
    for k, coefficient in enumerate(taps):
        acc = audioop.add(acc, audioop.mul(padded[4 * k : 4 * k + size], 4, coefficient), 4)
    return audioop.lin2lin(audioop.mul(acc, 4, 4.0), 4, SAMPLE_WIDTH)


def _fir_taps(rate: int, passband_hz: float, stopband_hz: float) -> list[float]:
    # A Hamming window's transition band is about 3.3 * rate / taps wide; it stops ~53 dB down.
    count = math.ceil(3.3 * rate / (stopband_hz - passband_hz)) | 1
    cutoff = (passband_hz + stopband_hz) / 2 / rate
    middle = count // 2
    taps = []
    for i in range(count):
        x = i - middle
        ideal = 2 * cutoff if x == 0 else math.sin(2 * math.pi * cutoff * x) / (math.pi * x)
        taps.append(ideal * (0.54 - 0.46 * math.cos(2 * math.pi * i / (count - 1))))
    total = sum(taps)
    return [t / total for t in taps]


def trim_silence(
    segment: AudioSegment, *, below_peak_db: float = TRIM_BELOW_PEAK_DB
) -> AudioSegment:
    """Cut leading and trailing audio quieter than ``below_peak_db`` under the peak (10 ms steps).

    Raises:
        PromptError: the audio is entirely silent.
    """
    if segment.max == 0:
        raise PromptError("the audio is silent")
    threshold = segment.max_dBFS - below_peak_db
    start = detect_leading_silence(segment, silence_threshold=threshold)
    end = len(segment) - detect_leading_silence(segment.reverse(), silence_threshold=threshold)
    return segment[start:end]


def normalise(
    segment: AudioSegment,
    *,
    target_dbfs: float = TARGET_DBFS,
    peak_ceiling_dbfs: float = PEAK_CEILING_DBFS,
) -> AudioSegment:
    """Bring the RMS level to ``target_dbfs``, but never a peak above ``peak_ceiling_dbfs``.

    No limiter or compression: when the target would push a peak past the ceiling the gain stops
    at the ceiling and a warning says so (the prompt is then quieter than the target).
    """
    gain = target_dbfs - segment.dBFS
    headroom = peak_ceiling_dbfs - segment.max_dBFS
    if gain > headroom:
        logger.warning(
            "prompt peak-limited target_dbfs=%.1f reached_dbfs=%.1f crest_db=%.1f",
            target_dbfs,
            segment.dBFS + headroom,
            segment.max_dBFS - segment.dBFS,
        )
        gain = headroom
    return segment.apply_gain(gain)


def prepare_speech(segment: AudioSegment) -> AudioSegment:
    """The whole chain for a spoken prompt: 8 kHz mono 16-bit, trimmed, normalised, padded."""
    speech = normalise(trim_silence(to_telephony(segment)))
    lead = AudioSegment.silent(duration=LEAD_IN_MS, frame_rate=SAMPLE_RATE)
    tail = AudioSegment.silent(duration=TAIL_MS, frame_rate=SAMPLE_RATE)
    return lead + speech + tail


def encode(segment: AudioSegment) -> dict[str, bytes]:
    """The file contents per Asterisk format: ``wav`` (8 kHz mono 16-bit PCM), ``ulaw``, ``alaw``.

    ``ulaw`` and ``alaw`` are raw G.711, one byte per sample, as Asterisk's format modules read.

    Raises:
        ValueError: the segment is not 8 kHz mono 16-bit (run it through ``to_telephony`` first).
    """
    shape = (segment.frame_rate, segment.channels, segment.sample_width)
    if shape != (SAMPLE_RATE, 1, SAMPLE_WIDTH):
        raise ValueError(f"expected 8 kHz mono 16-bit audio, got rate/channels/width {shape}")
    pcm: bytes = segment.raw_data
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(SAMPLE_WIDTH)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm)
    return {
        "wav": buffer.getvalue(),
        "ulaw": audioop.lin2ulaw(pcm, SAMPLE_WIDTH),
        "alaw": audioop.lin2alaw(pcm, SAMPLE_WIDTH),
    }


def render_prompt(
    source: PromptSource,
    recordings: Path,
    *,
    espeak: str = ESPEAK,
    timeout: float = ESPEAK_TIMEOUT_S,
) -> tuple[AudioSegment, str]:
    """The finished audio for one prompt and where it came from (the recording or ``espeak-ng``).

    Raises:
        PromptError: the recording is unreadable or silent, or synthesis failed.
    """
    recording = recordings / source.language / f"{source.name}.wav"
    if recording.is_file():
        what = f"recording {recording}"
        try:
            raw = decode_wav(recording.read_bytes(), what=what)
        except OSError as e:
            raise PromptError(f"cannot read {recording}: {e}") from e
    else:
        what = f"{espeak} voice {source.voice}"
        raw = synthesize(
            source.text, source.voice, speed=source.speed, espeak=espeak, timeout=timeout
        )
    try:
        return prepare_speech(raw), what
    except PromptError as e:
        raise PromptError(f"{source.language}/{source.name} from {what}: {e}") from e


def build_prompts(
    sources: Path,
    out_dir: Path,
    *,
    languages: Sequence[str] | None = None,
    espeak: str = ESPEAK,
    timeout: float = ESPEAK_TIMEOUT_S,
) -> list[Path]:
    """Render every prompt (and the SIT) from ``sources`` and write them under ``out_dir``.

    ``sources`` is the directory holding ``prompts.toml`` and ``recordings/``; ``out_dir`` is
    Asterisk's data directory (``/usr/share/asterisk`` on Debian). ``languages`` limits the build
    to some of the languages in ``prompts.toml`` (default: all). Everything is rendered before
    anything is written, and each file is replaced atomically, so a failed build leaves the old
    prompts in place and Asterisk never reads a half-written file. Returns the paths written.

    Raises:
        PromptSourceError: ``prompts.toml`` is invalid or lacks a requested language.
        SynthesizerMissingError: espeak-ng is needed and missing.
        PromptError: synthesis, a recording or writing failed.
    """
    entries = _select(load_sources(sources / SOURCES_FILE), languages)
    recordings = sources / RECORDINGS_DIR
    _warn_unused_recordings(recordings, entries)
    rendered: list[tuple[Path, str, AudioSegment]] = []
    for entry in entries:
        audio, origin = render_prompt(entry, recordings, espeak=espeak, timeout=timeout)
        logger.info("prompt rendered lang=%s name=%s source=%s", entry.language, entry.name, origin)
        directory = out_dir / "sounds" / entry.language / SOUNDS_SUBDIR
        rendered.append((directory, entry.name, audio))
        if entry.name == MOH_ENTER_PROMPT:
            moh_class = out_dir / MOH_DIR / f"{MOH_CLASS_PREFIX}{entry.language}"
            rendered.append((moh_class, MOH_ENTER_NAME, audio))
    tone = sit_tone()
    for language in sorted({e.language for e in entries}):
        rendered.append((out_dir / MOH_DIR / f"{MOH_CLASS_PREFIX}{language}", SIT_NAME, tone))
    written: list[Path] = []
    for directory, name, audio in rendered:
        written.extend(write_formats(encode(audio), directory, name))
    return written


def _select(entries: list[PromptSource], languages: Sequence[str] | None) -> list[PromptSource]:
    if not languages:
        return entries
    known = {e.language for e in entries}
    missing = [lang for lang in languages if lang not in known]
    if missing:
        have = ", ".join(sorted(known))
        raise PromptSourceError(
            [f"language(s) {', '.join(missing)} not in {SOURCES_FILE} (it has {have})"]
        )
    return [e for e in entries if e.language in languages]


def _warn_unused_recordings(recordings: Path, entries: Iterable[PromptSource]) -> None:
    # A misspelt file name would silently keep the synthetic voice: say so.
    expected = {recordings / e.language / f"{e.name}.wav" for e in entries}
    for path in sorted(recordings.glob("*/*")):
        if path not in expected and not path.name.startswith("."):
            logger.warning("recording ignored path=%s (not <lang>/<prompt name>.wav)", path)


def write_formats(files: dict[str, bytes], directory: Path, name: str) -> list[Path]:
    """Write ``<directory>/<name>.<format>`` for each format, each replaced atomically.

    The temporary file is hidden (``.name.ext.tmp``) so Asterisk's MOH directory scan skips it.

    Raises:
        PromptError: the directory cannot be created or a file cannot be written.
    """
    written = []
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for fmt, data in files.items():
            path = directory / f"{name}.{fmt}"
            tmp = directory / f".{name}.{fmt}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, path)
            logger.info("prompt written path=%s bytes=%d", path, len(data))
            written.append(path)
    except OSError as e:
        raise PromptError(f"cannot write to {directory}: {e}{_symlink_hint(directory)}") from e
    return written


def _symlink_hint(directory: Path) -> str:
    # Debian's sounds/en is an absolute symlink into /etc/alternatives; seen from outside a chroot
    # it dangles, and mkdir then fails with a puzzling "File exists".
    for path in (directory, *directory.parents):
        if path.is_symlink() and not path.exists():
            return (
                f" ({path} is a symlink to {os.readlink(path)}, which does not exist here: for a"
                " chroot, build inside it or into a staging directory and copy)"
            )
    return ""


def prompts_build_command(sources: Path, out_dir: Path, languages: tuple[str, ...]) -> int:
    """``screener prompts build``: build, print each file written, return the exit status.

    Exit status: 0 done, 2 ``prompts.toml`` invalid (like a ConfigError), 1 any other failure.
    Errors are printed as one line on stderr, without a traceback.
    """
    try:
        written = build_prompts(sources, out_dir, languages=languages or None)
    except PromptSourceError as e:
        print(f"screener prompts build: {e}", file=sys.stderr)
        return 2
    except PromptError as e:
        print(f"screener prompts build: {e}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    print(f"{len(written)} files written under {out_dir}")
    return 0
