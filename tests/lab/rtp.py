"""RTP captures for SIPp's ``play_pcap_audio``: RFC 4733 DTMF digits and PCMU audio.

SIPp replays a pcap with the captured timing, rewriting addresses and ports, but keeps the RTP
headers. The DTMF captures shipped with SIPp cannot be chained (``dtmf_2833_9.pcap`` has a lower
sequence number and timestamp than ``dtmf_2833_star.pcap``, so Asterisk drops the ``9``), hence
this generator: one stream, one SSRC, increasing sequence numbers and timestamps.

    write_dtmf_pcap(path, "*9")            # the flag key
    write_pcmu_pcap(path, seconds=1.0)     # silence, to get media flowing
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

SAMPLE_RATE = 8000
PACKET_MS = 20
SAMPLES_PER_PACKET = SAMPLE_RATE * PACKET_MS // 1000
DTMF_EVENTS = {
    **{str(d): d for d in range(10)},
    "*": 10,
    "#": 11,
    "A": 12,
    "B": 13,
    "C": 14,
    "D": 15,
}
TELEPHONE_EVENT_PT = 101
PCMU_PT = 0
_SRC_PORT, _DST_PORT = 6000, 6000


def _ipv4_checksum(header: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _frame(payload: bytes) -> bytes:
    """Ethernet + IPv4 + UDP around an RTP packet (127.0.0.1 -> 127.0.0.1)."""
    udp = struct.pack("!HHHH", _SRC_PORT, _DST_PORT, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))  # fmt: skip
    ip = ip[:10] + struct.pack("!H", _ipv4_checksum(ip)) + ip[12:]
    return b"\x00" * 12 + b"\x08\x00" + ip + udp


def write_pcap(path: Path, packets: list[tuple[float, bytes]]) -> Path:
    """Write ``(seconds_from_start, rtp_packet)`` pairs as an Ethernet pcap."""
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    for at, rtp in packets:
        frame = _frame(rtp)
        seconds, micros = 1_700_000_000 + int(at), round((at % 1) * 1_000_000)
        out += struct.pack("<IIII", seconds, micros, len(frame), len(frame)) + frame
    path.write_bytes(bytes(out))
    return path


def _rtp(pt: int, seq: int, timestamp: int, ssrc: int, payload: bytes, marker: bool) -> bytes:
    return (
        struct.pack(
            "!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc
        )
        + payload
    )


def dtmf_packets(
    digits: str,
    *,
    tone_ms: int = 100,
    gap_ms: int = 200,
    start_s: float = 0.0,
    payload_type: int = TELEPHONE_EVENT_PT,
) -> list[tuple[float, bytes]]:
    """RFC 4733 events for ``digits``: each a marker packet, updates every 20 ms, 3 end packets."""
    ssrc = random.getrandbits(32)
    seq, timestamp, at = random.randrange(1000, 30000), random.randrange(1 << 20), start_s
    packets: list[tuple[float, bytes]] = []
    steps = max(1, tone_ms // PACKET_MS)
    for digit in digits:
        event = DTMF_EVENTS[digit.upper()]
        for step in range(1, steps + 1):
            duration = step * SAMPLES_PER_PACKET
            body = struct.pack("!BBH", event, 10, duration)
            packets.append((at, _rtp(payload_type, seq, timestamp, ssrc, body, step == 1)))
            seq, at = seq + 1, at + PACKET_MS / 1000
        end = struct.pack("!BBH", event, 0x80 | 10, steps * SAMPLES_PER_PACKET)
        for _ in range(3):  # the end packet is sent three times, with one sequence number
            packets.append((at, _rtp(payload_type, seq, timestamp, ssrc, end, False)))
        seq += 1
        timestamp += (tone_ms + gap_ms) * SAMPLE_RATE // 1000
        at += gap_ms / 1000
    return packets


def write_dtmf_pcap(path: Path, digits: str, *, tone_ms: int = 100, gap_ms: int = 200) -> Path:
    """A pcap playing ``digits`` as RFC 4733 events (see :func:`dtmf_packets`)."""
    return write_pcap(path, dtmf_packets(digits, tone_ms=tone_ms, gap_ms=gap_ms))


def write_pcmu_pcap(path: Path, seconds: float = 1.0) -> Path:
    """A pcap of ``seconds`` of PCMU silence in 20 ms packets."""
    ssrc, seq, timestamp = (
        random.getrandbits(32),
        random.randrange(1 << 15),
        random.randrange(1 << 20),
    )
    packets = []
    for n in range(int(seconds * 1000 / PACKET_MS)):
        payload = b"\xff" * SAMPLES_PER_PACKET
        packets.append(
            (
                n * PACKET_MS / 1000,
                _rtp(PCMU_PT, seq + n, timestamp + n * SAMPLES_PER_PACKET, ssrc, payload, n == 0),
            )
        )
    return write_pcap(path, packets)
