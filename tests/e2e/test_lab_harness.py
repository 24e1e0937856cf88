"""Fast checks of the lab harness's pure parts (no Asterisk, no SIPp needed)."""

from __future__ import annotations

import struct
from pathlib import Path

from tests.lab.ami import parse_message, where
from tests.lab.asterisk_config import (
    SHIPPED_FILES,
    LabPorts,
    LabSecrets,
    render_config,
    rewrite_secret,
)
from tests.lab.rtp import DTMF_EVENTS, write_dtmf_pcap, write_pcmu_pcap


def read_rtp(path: Path) -> list[tuple[float, bytes]]:
    data = path.read_bytes()
    magic, _, _, _, _, _, linktype = struct.unpack("<IHHiIII", data[:24])
    assert (magic, linktype) == (0xA1B2C3D4, 1)
    out, offset = [], 24
    while offset < len(data):
        seconds, micros, size, _ = struct.unpack("<IIII", data[offset : offset + 16])
        frame = data[offset + 16 : offset + 16 + size]
        out.append((seconds + micros / 1e6, frame[14 + 20 + 8 :]))
        offset += 16 + size
    return out


def test_dtmf_pcap_has_increasing_sequence_numbers_and_timestamps(tmp_path: Path) -> None:
    packets = read_rtp(write_dtmf_pcap(tmp_path / "d.pcap", "*9"))
    events = [(struct.unpack("!HI", rtp[2:8]), rtp[12], rtp[13] & 0x80) for _, rtp in packets]
    assert [e for _, e, end in events if end] == [DTMF_EVENTS["*"]] * 3 + [DTMF_EVENTS["9"]] * 3
    seqs = [seq for (seq, _), _, _ in events]
    stamps = [ts for (_, ts), _, _ in events]
    assert seqs == sorted(seqs) and stamps == sorted(stamps)
    assert stamps[-1] > stamps[0]  # the 9 starts after the *, unlike SIPp's own captures
    assert {rtp[1] & 0x7F for _, rtp in packets} == {101}
    times = [t for t, _ in packets]
    assert times == sorted(times)


def test_pcmu_pcap_is_20ms_packets(tmp_path: Path) -> None:
    packets = read_rtp(write_pcmu_pcap(tmp_path / "a.pcap", seconds=0.2))
    assert len(packets) == 10
    assert all(len(rtp) == 12 + 160 and rtp[1] & 0x7F == 0 for _, rtp in packets)


def test_rendered_config_includes_the_shipped_files_and_replaces_secret_and_agi_port() -> None:
    ports = LabPorts(
        sip=1, ami=2, agi=8, rtp_start=10, rtp_end=20,
        agents={"agent1": 3, "agent2": 4, "agent3": 5},
        callers=(6, 7),
    )  # fmt: skip
    files = render_config("/tmp/x", ports, LabSecrets(screener_secret="s3cret"))
    for name in SHIPPED_FILES:
        assert name in files
        assert any(f"#include {name}" in text for text in files.values())
    assert "secret = s3cret" in files["manager_screener.conf"]
    assert "change-me" not in files["manager_screener.conf"]
    assert "astetcdir => /tmp/x/etc" in files["asterisk.conf"]
    assert "match = 127.0.0.1:6" in files["pjsip.conf"]
    assert "SCREENER_AGI=agi://127.0.0.1:8/screen" in files["extensions_screener.conf"]


def test_rewrite_secret_touches_only_the_named_section() -> None:
    text = "[a]\nsecret = x\n[screener]\nsecret = y\nread = call\n"
    assert (
        rewrite_secret(text, "screener", "z")
        == "[a]\nsecret = x\n[screener]\nsecret = z\nread = call\n"
    )


def test_ami_message_parsing_keeps_order_duplicates_and_raw_bytes() -> None:
    raw = b"Event: UserEvent\r\nUserEvent: ScreenerFlag\r\nLinkedid: 1\r\nLinkedid: 2\r\n\r\n"
    message = parse_message(raw, 1.0)
    assert message.event == "UserEvent"
    assert message.getall("linkedid") == ["1", "2"]
    assert message["Linkedid"] == "1"
    assert where(Event="UserEvent", UserEvent="ScreenerFlag")(message)
    assert message.raw == raw


def test_test_files_have_unique_basenames() -> None:
    """pytest imports tests/ and tests/e2e/ as top-level modules: two files with one basename
    stop the whole collection (it happened once; CI caught it, nothing else would)."""
    from tests.lab import REPO

    names = [p.name for p in (REPO / "tests").rglob("test_*.py")]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []
