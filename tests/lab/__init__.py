"""The screener lab: real Asterisk 22 (in a chroot), real SIPp calls and a real redis-server.

Every user-visible flow is tested end to end against these parts. The modules here are plain
Python (no pytest import): ``tests/conftest.py`` turns them into fixtures.

- :mod:`tests.lab.net`      free TCP/UDP ports and port blocks
- :mod:`tests.lab.redis`    :class:`RedisServer`, a throw-away ``redis-server``
- :mod:`tests.lab.asterisk` :class:`AsteriskLab`, one Asterisk instance with its own config tree
- :mod:`tests.lab.prompts`  :func:`install_lab_prompts`, the screener prompts for the lab
- :mod:`tests.lab.ami`      :class:`AmiObserver`, a raw asyncio AMI client that records everything
- :mod:`tests.lab.rtp`      RTP captures (RFC 4733 DTMF, PCMU) for SIPp's ``play_pcap_audio``
- :mod:`tests.lab.sipp`     :class:`Sipp` processes running ``tests/scenarios/*.xml``

Policy for missing parts (binaries, the chroot): skip locally, fail when ``CI=true``. The check
lives in :func:`tests.lab.missing` so that every fixture applies it the same way.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

LAB_DIR = Path(os.environ.get("SCREENER_LAB_DIR", "/var/lib/screener-lab"))
ROOTFS = LAB_DIR / "asterisk-root"
REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "tests" / "scenarios"
DEPLOY_ASTERISK = REPO / "deploy" / "asterisk"


class LabUnavailable(RuntimeError):
    """A part of the lab (binary, chroot) is missing on this machine."""


def in_ci() -> bool:
    """True when running in CI, where a missing lab part is a failure, never a skip."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing() -> list[str]:
    """What the lab needs and this machine lacks (empty list: everything is there)."""
    problems = [
        f"{name} not found on PATH"
        for name in ("redis-server", "sipp", "chroot")
        if shutil.which(name) is None
    ]
    if not (ROOTFS / "usr" / "sbin" / "asterisk").exists():
        problems.append(f"no Asterisk chroot at {ROOTFS} (run scripts/setup.sh)")
    if os.geteuid() != 0:
        problems.append("the lab needs root (chroot, raw sockets for SIPp RTP)")
    return problems
