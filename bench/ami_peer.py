"""A loopback AMI peer for benchmarks: answers instantly and times the client's reaction."""

from __future__ import annotations

import asyncio
import math
import time

from tests.ami_fake import FakeAmi, FakeChannel, event


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


class BenchAmi(FakeAmi):
    """``flag_round(i)`` pushes agent i's flag event and waits for the Redirect of caller i."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.count = channels
        self._waiter: asyncio.Future[float] | None = None
        self.generation = 0
        self.reset_channels()

    def reset_channels(self) -> None:
        """Fresh calls (new Uniqueids), so no flag is a duplicate of an earlier round."""
        self.generation += 1
        self.channels = []
        for i in range(self.count):
            caller_uid = f"{1700000000 + self.generation}.{2 * i}"
            self.channels.append(
                FakeChannel(
                    f"PJSIP/caller-{i:08x}",
                    caller_uid,
                    {
                        "CHANNEL(linkedid)": caller_uid,
                        "SCREENER_INBOUND": "1",
                        "SCREENER_CID_B64": "MTM4MTIzNDEyMzQ=",
                        "SCREENER_CNAM_B64": "",
                        "SCREENER_CID_PRES": "allowed_not_screened",
                        "SCREENER_DID": "4008001234",
                        "SCREENER_QUEUE": "hotline",
                    },
                )
            )
            self.channels.append(
                FakeChannel(
                    f"PJSIP/agent1-{i:08x}",
                    f"{1700000000 + self.generation}.{2 * i + 1}",
                    {"CHANNEL(linkedid)": caller_uid, "SCREENER_FLAG_TOKEN": f"{i:040x}"},
                )
            )
        self._index = {c.name: c for c in self.channels} | {c.uniqueid: c for c in self.channels}

    def find(self, name: str) -> FakeChannel | None:
        return self._index.get(name)

    async def wait_logins(self, n: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.logins < n:
            if time.monotonic() > deadline:
                raise TimeoutError("client did not log in")
            await asyncio.sleep(0.02)
        self.logins = 0

    def _answer(self, m: dict[str, str]) -> bytes:
        reply = super()._answer(m)
        if m.get("Action", "").lower() == "redirect" and self._waiter and not self._waiter.done():
            self._waiter.set_result(time.perf_counter())
        return reply

    async def flag_round(self, i: int, *, baseline: bool = False, warmup: bool = False) -> float:
        agent = f"PJSIP/agent1-{i:08x}"
        self._waiter = asyncio.get_running_loop().create_future()
        raw = event(
            Event="UserEvent",
            Privilege="user,all",
            Channel=agent,
            Uniqueid=f"{1700000000 + self.generation}.{2 * i + 1}",
            UserEvent="ScreenerFlag",
            AgentChannel=agent,
            Token=f"{i:040x}",
        )
        started = time.perf_counter()
        await self.push(raw)
        done = await asyncio.wait_for(self._waiter, 5)
        if not baseline and not warmup:
            await asyncio.sleep(0.002)  # let the daemon finish its Redis write before the next
        return done - started
