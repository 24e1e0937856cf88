"""Free ports for lab processes.

Ports are picked below Linux's ephemeral range (32768+) so that no outgoing connection can take
them between the check and the bind, and each port is handed out once per process.
"""

from __future__ import annotations

import random
import socket

_LOW, _SPLIT, _HIGH = 20000, 24000, 32000
_next_block = _SPLIT
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
    """A port free on 127.0.0.1 for both TCP and UDP, not handed out before in this process.

    Single ports come from their own range, so that they never fragment the range blocks are
    taken from.
    """
    for _ in range(2000):
        port = random.randrange(_LOW, _SPLIT)
        if port not in _taken and _bindable(port):
            _taken.add(port)
            return port
    raise RuntimeError(f"no free port in {_LOW}-{_SPLIT}")


def free_block(size: int, *, align: int = 2) -> int:
    """The first port of ``size`` consecutive free ports (TCP and UDP), starting on an even port.

    RTP needs an even port and the odd one after it, hence the default alignment. Blocks are
    handed out in order through their range and never twice in a process (an Asterisk's RTP range
    is only bound while calls are up, so a bind test alone could hand it out again).
    """
    global _next_block
    while True:
        start = (_next_block + align - 1) // align * align
        if start + size > _HIGH:
            break
        _next_block = start + size
        block = range(start, start + size)
        if _taken.isdisjoint(block) and all(_bindable(p) for p in block):
            _taken.update(block)
            return start
    raise RuntimeError(f"no block of {size} free ports in {_SPLIT}-{_HIGH}")
