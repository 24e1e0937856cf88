"""Free ports for lab processes.

Ports are picked below Linux's ephemeral range (32768+) so that no outgoing connection can take
them between the check and the bind, and each port is handed out once per process.
"""

from __future__ import annotations

import random
import socket

_LOW, _HIGH = 20000, 32000
_taken: set[int] = set()


def _bindable(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port() -> int:
    """A port free on 127.0.0.1 for both TCP and UDP, never returned before in this process."""
    return free_block(1, align=1)


def free_block(size: int, *, align: int = 2) -> int:
    """The first port of ``size`` consecutive free ports (TCP and UDP), starting on an even port.

    RTP needs an even port and the odd one after it, hence the default alignment.
    """
    for _ in range(200):
        start = random.randrange(_LOW, _HIGH - size) // align * align
        block = range(start, start + size)
        if _taken.isdisjoint(block) and all(_bindable(p) for p in block):
            _taken.update(block)
            return start
    raise RuntimeError(f"no block of {size} free ports in {_LOW}-{_HIGH}")
