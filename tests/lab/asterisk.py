"""One Asterisk 22 instance of the lab, running in the chroot with its own config tree.

Each instance lives in ``<rootfs>/tmp/screener-lab-<id>/`` (``etc run spool log lib db cache
data``); ``asterisk.conf`` points every directory there, so several instances run side by side
from one chroot, each on its own free ports. The data dir holds links to the chroot's sounds plus
the screener prompts (see :mod:`tests.lab.prompts`), so instances never write into the chroot's
shared files.

    lab = AsteriskLab()
    lab.start()                     # renders the config, waits for AMI + FullyBooted
    lab.cli("queue show hotline")
    lab.stop()
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.lab import ROOTFS
from tests.lab.asterisk_config import AGENTS, LabPorts, LabSecrets, render_config
from tests.lab.net import free_block, free_port
from tests.lab.prompts import install_lab_prompts, write_lab_default_moh

DATA_DIR = "/usr/share/asterisk"
_SHARED_DATA = ("documentation", "keys", "firmware", "phoneprov", "rest-api", "static-http")
_ids = itertools.count(1)


class AsteriskError(RuntimeError):
    """Asterisk did not start, stop or answer; the message ends with the log tail."""


class AsteriskLab:
    """A lab Asterisk: config rendering, process lifecycle, CLI and AMI credentials.

    ``prompts`` is a directory laid out like an Asterisk data dir (``sounds/...``, ``moh/...``)
    that is copied into the instance; without it the prompts are built for this instance.
    ``extra_dialplan`` is appended to ``extensions.conf``; ``dialplan_prelude`` goes before its
    ``#include extensions_screener.conf`` (e.g. a site's own ``[globals]``). ``verbose`` is the
    root verbosity (``core set verbose`` from ``cli()`` only changes that remote console's).
    """

    def __init__(
        self,
        *,
        rootfs: Path = ROOTFS,
        prompts: Path | None = None,
        extra_dialplan: str = "",
        dialplan_prelude: str = "",
        rtp_ports: int = 400,
        caller_ports: int = 4,
        verbose: int = 3,
    ) -> None:
        self.rootfs = rootfs
        self.id = f"{os.getpid()}-{next(_ids)}"
        self.chroot_dir = f"/tmp/screener-lab-{self.id}"
        self.dir = rootfs / self.chroot_dir.lstrip("/")
        self.prompts = prompts
        self.extra_dialplan = extra_dialplan
        self.dialplan_prelude = dialplan_prelude
        self.verbose = verbose
        rtp_start = free_block(rtp_ports)
        self.ports = LabPorts(
            sip=free_port(),
            ami=free_port(),
            agi=free_port(),
            rtp_start=rtp_start,
            rtp_end=rtp_start + rtp_ports - 1,
            agents={agent: free_port() for agent in AGENTS},
            callers=tuple(free_port() for _ in range(caller_ports)),
        )
        self.secrets = LabSecrets(
            lab_secret=secrets.token_hex(8), screener_secret=secrets.token_hex(8)
        )
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- paths and credentials -------------------------------------------------------------

    @property
    def conf(self) -> str:
        """``asterisk.conf`` as seen inside the chroot (for ``-C``)."""
        return f"{self.chroot_dir}/etc/asterisk.conf"

    @property
    def full_log(self) -> Path:
        return self.dir / "log" / "full"

    @property
    def console_log(self) -> Path:
        return self.dir / "log" / "console.log"

    @property
    def queue_log(self) -> Path:
        return self.dir / "log" / "queue_log"

    @property
    def ami_port(self) -> int:
        return self.ports.ami

    @property
    def sip_port(self) -> int:
        return self.ports.sip

    @property
    def agi_port(self) -> int:
        """Where the dialplan's screening AGI connects (a daemon on the lab listens there)."""
        return self.ports.agi

    def agent_port(self, agent: str) -> int:
        """The UDP port where ``agent``'s SIPp must listen (its static PJSIP contact)."""
        return self.ports.agents[agent]

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    # -- config ----------------------------------------------------------------------------

    def render(self) -> None:
        """Write the config tree and the data dir (idempotent; rewrites the config files)."""
        for sub in ("etc", "run", "spool", "log", "lib", "db", "cache", "data"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        files = render_config(
            self.chroot_dir,
            self.ports,
            self.secrets,
            extra_dialplan=self.extra_dialplan,
            dialplan_prelude=self.dialplan_prelude,
            verbose=self.verbose,
        )
        for name, text in files.items():
            (self.dir / "etc" / name).write_text(text)
        self._render_data_dir()

    def _render_data_dir(self) -> None:
        data = self.dir / "data"
        for name in _SHARED_DATA:
            link = data / name
            if not link.is_symlink():
                link.symlink_to(f"{DATA_DIR}/{name}")
        sounds = data / "sounds"
        sounds.mkdir(exist_ok=True)
        shared_sounds = self.rootfs / DATA_DIR.lstrip("/") / "sounds"
        for entry in shared_sounds.iterdir():
            target = sounds / entry.name
            if entry.name == "en":
                # A real dir of links, so that sounds/en/screener can be added per instance.
                target.mkdir(exist_ok=True)
                en = self.resolve_in_chroot(f"{DATA_DIR}/sounds/en")
                for sound in self.chroot_path(en).iterdir():
                    link = target / sound.name
                    if not link.is_symlink():
                        link.symlink_to(f"{en}/{sound.name}")
            elif not target.is_symlink() and not target.exists():
                target.symlink_to(f"{DATA_DIR}/sounds/{entry.name}")
        write_lab_default_moh(data)
        if self.prompts is None:
            install_lab_prompts(data)
        else:
            shutil.copytree(self.prompts, data, dirs_exist_ok=True, symlinks=False)

    def chroot_path(self, path: str) -> Path:
        """The host path of an absolute path inside the chroot."""
        return self.rootfs / path.lstrip("/")

    def resolve_in_chroot(self, path: str) -> str:
        """Follow symlinks (e.g. Debian's alternatives) the way a process in the chroot would."""
        for _ in range(20):
            host = self.chroot_path(path)
            if not host.is_symlink():
                return path
            target = os.readlink(host)
            path = target if target.startswith("/") else f"{os.path.dirname(path)}/{target}"
        raise AsteriskError(f"symlink loop at {path}")

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Render, start in the foreground, wait until AMI logins work and it is fully booted.

        Raises:
            AsteriskError: it exited or did not boot within ``timeout`` (log tail included).
        """
        if self.running():
            return
        self.render()
        began = time.monotonic()
        argv = ["chroot", str(self.rootfs), "asterisk", "-f", "-n", "-C", self.conf]
        with self.console_log.open("ab") as console:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = began + timeout
        while not self._booted():
            if self._proc.poll() is not None:
                raise AsteriskError(f"asterisk exited {self._proc.returncode}\n{self.tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise AsteriskError(f"asterisk not booted after {timeout}s\n{self.tail()}")
            time.sleep(0.05)
        self.startup_seconds = time.monotonic() - began

    def _booted(self) -> bool:
        if not self.ami_login_ok():
            return False
        try:
            out = self.cli("core waitfullybooted", timeout=5)
        except AsteriskError:
            return False
        return "fully booted" in out.lower()

    def ami_login_ok(self) -> bool:
        """True if the ``lab`` user can log in to AMI right now (a blocking check)."""
        try:
            with socket.create_connection(("127.0.0.1", self.ports.ami), timeout=1) as sock:
                sock.settimeout(2)
                sock.recv(128)  # banner
                sock.sendall(
                    f"Action: Login\r\nUsername: {self.secrets.lab_user}\r\n"
                    f"Secret: {self.secrets.lab_secret}\r\nEvents: off\r\n\r\n".encode()
                )
                reply = b""
                while b"\r\n\r\n" not in reply:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return False
                    reply += chunk
                return b"Response: Success" in reply
        except OSError:
            return False

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """``core stop now``, then SIGKILL if it is still there after ``timeout``."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self.sigcont()
            # If it is wedged, the CLI fails and the kill below does the job.
            with contextlib.suppress(AsteriskError):
                self.cli("core stop now", timeout=5)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def kill(self) -> None:
        """SIGKILL (a crash, as far as clients can tell)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def restart(self, timeout: float = 30.0) -> None:
        self.stop()
        self.start(timeout)

    def sigstop(self) -> None:
        """Freeze Asterisk: TCP connections stay up, nothing answers (a hung PBX)."""
        if self._proc is not None:
            os.kill(self._proc.pid, signal.SIGSTOP)

    def sigcont(self) -> None:
        if self._proc is not None:
            os.kill(self._proc.pid, signal.SIGCONT)

    def cleanup(self) -> None:
        """Stop and delete the instance directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def hangup_all(self, timeout: float = 5.0) -> None:
        """Hang up every channel and wait until none is left (the per-test reset)."""
        self.cli("channel request hangup all")
        deadline = time.monotonic() + timeout
        while self.channel_count() and time.monotonic() < deadline:
            time.sleep(0.05)

    def channel_count(self) -> int:
        """Active channels, from ``core show channels count``."""
        for line in self.cli("core show channels count").splitlines():
            if "active channel" in line:
                return int(line.split()[0])
        return 0

    # -- introspection ---------------------------------------------------------------------

    def cli(self, command: str, timeout: float = 10.0) -> str:
        """Run one CLI command through ``asterisk -rx`` and return its output.

        Raises:
            AsteriskError: the remote console failed or timed out.
        """
        argv = ["chroot", str(self.rootfs), "asterisk", "-C", self.conf, "-rx", command]
        try:
            done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as e:
            raise AsteriskError(f"CLI {command!r} timed out after {timeout}s") from e
        if done.returncode != 0:
            raise AsteriskError(
                f"CLI {command!r} exited {done.returncode}: {done.stderr.decode(errors='replace')}"
            )
        return done.stdout.decode(errors="replace")

    def tail(self, lines: int = 40) -> str:
        """The last lines of the full log and of the console output, for failure messages."""
        out = []
        for path in (self.full_log, self.console_log):
            try:
                text = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                text = ["(missing)"]
            out.append(f"--- {path.name} ---\n" + "\n".join(text))
        return "\n".join(out)
