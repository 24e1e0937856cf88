"""A throw-away ``redis-server`` on a free loopback port, with no persistence.

Later tests kill and restart Redis under the daemon, so the server can be stopped, killed,
frozen and started again on the same port.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.lab.net import free_port


class RedisServer:
    """One ``redis-server --bind 127.0.0.1 --port <free> --save '' --appendonly no``.

    server = RedisServer(tmp_path)
    server.start()          # waits for PING
    server.url              # 'redis://127.0.0.1:<port>/0'
    server.kill(); server.start()   # same port, empty data
    """

    def __init__(
        self, workdir: Path, port: int | None = None, extra_args: tuple[str, ...] = ()
    ) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.log = workdir / f"redis-{self.port}.log"
        self.extra_args = extra_args
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers PING."""
        if self.running():
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            "redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
            "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
            "--logfile", str(self.log), "--daemonize", "no", *self.extra_args,
        ]  # fmt: skip
        self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited {self._proc.returncode}: {self.tail()}")
            if self.ping():
                return
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server not answering after {timeout}s: {self.tail()}")

    def ping(self, timeout: float = 0.5) -> bool:
        """True if the server answers ``PING`` with ``+PONG``."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self.sigcont()
            self._proc.terminate()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def kill(self) -> None:
        """SIGKILL: the abrupt death later tests inflict on the daemon's Redis."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def restart(self) -> None:
        """Stop, then start again on the same port (the data is gone: nothing is persisted)."""
        self.stop()
        self.start()

    def sigstop(self) -> None:
        """Freeze the server: connections stay open, nothing answers."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def sigcont(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class SentinelSet:
    """A Redis master, one replica and one Sentinel watching them (quorum 1, failover in a few
    seconds): the high-availability setup ``deploy/`` describes, on loopback.

    sentinels = SentinelSet(tmp_path); sentinels.start()
    sentinels.address        # '127.0.0.1:<sentinel port>'
    sentinels.master.kill()  # the Sentinel promotes the replica
    """

    MASTER_NAME = "screener"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.master = RedisServer(workdir / "master")
        self.replica = RedisServer(
            workdir / "replica", extra_args=("--replicaof", "127.0.0.1", str(self.master.port))
        )
        self.sentinel_port = free_port()
        self._sentinel: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.sentinel_port}"

    def start(self, timeout: float = 15.0) -> None:
        self.master.start()
        self.replica.start()
        conf = self.workdir / "sentinel.conf"
        conf.write_text(
            f"port {self.sentinel_port}\nbind 127.0.0.1\ndir {self.workdir}\n"
            f"sentinel monitor {self.MASTER_NAME} 127.0.0.1 {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {self.MASTER_NAME} 1000\n"
            f"sentinel failover-timeout {self.MASTER_NAME} 5000\n"
            f"logfile {self.workdir / 'sentinel.log'}\n"
        )
        self._sentinel = subprocess.Popen(
            ["redis-server", str(conf), "--sentinel"], stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.master_port() == self.master.port and self._replica_synced():
                return
            time.sleep(0.1)
        raise RuntimeError("sentinel set not ready: " + self.tail())

    def _ask(self, port: int, command: bytes) -> bytes:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(command)
                return sock.recv(4096)
        except OSError:
            return b""

    def master_port(self) -> int | None:
        """The master's port as the Sentinel names it now."""
        reply = self._ask(
            self.sentinel_port,
            f"SENTINEL get-master-addr-by-name {self.MASTER_NAME}\r\n".encode(),
        )
        parts = reply.split(b"\r\n")
        return int(parts[4]) if len(parts) > 4 and parts[4].isdigit() else None

    def _replica_synced(self) -> bool:
        return b"master_link_status:up" in self._ask(self.replica.port, b"INFO replication\r\n")

    def stop(self) -> None:
        if self._sentinel is not None and self._sentinel.poll() is None:
            self._sentinel.kill()
            self._sentinel.wait()
        self.replica.kill()
        self.master.kill()

    def tail(self) -> str:
        log = self.workdir / "sentinel.log"
        return log.read_text(errors="replace")[-2000:] if log.exists() else "(no sentinel log)"
