"""Scale-out end to end: two Asterisk servers, each with its screener daemon, one Redis behind
Sentinel (a master, a replica, a Sentinel). What one PBX's agents learn protects the other's:
flags from both count towards one automatic block, which the other PBX enforces on entry; and a
Redis failover loses no flag (flags leave the spool only once a replica has them)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from screener.keys import KeySpace
from tests.lab.ami import AmiObserver, where
from tests.lab.asterisk import AsteriskLab
from tests.lab.asterisk_config import DID_QUEUE
from tests.lab.daemon import ScreenerDaemon
from tests.lab.redis import SentinelSet
from tests.lab.sipp import SippFactory

pytestmark = [pytest.mark.lab, pytest.mark.timeout(180)]

NUMBER = "13812340777"


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    s = SentinelSet(tmp_path / "redis")
    s.start()
    yield s
    s.stop()


@pytest.fixture
def second_asterisk(lab_required: None, lab_prompts: Path) -> Iterator[AsteriskLab]:
    lab = AsteriskLab(prompts=lab_prompts)
    lab.start()
    yield lab
    lab.hangup_all()
    lab.stop()
    shutil.rmtree(lab.dir, ignore_errors=True)


def daemon_for(
    lab: AsteriskLab, node: str, sentinels: SentinelSet, workdir: Path
) -> ScreenerDaemon:
    env = {
        "SCREENER_AMI__NODE": node,
        "SCREENER_REDIS__SENTINELS": f'["{sentinels.address}"]',
        "SCREENER_REDIS__MASTER_NAME": SentinelSet.MASTER_NAME,
        "SCREENER_REDIS__WAIT_REPLICAS": "1",
        "SCREENER_HOTLINES": f'{{"{DID_QUEUE}": "lab-hotline"}}',
        "SCREENER_SCREENING__QUORUM": "2",
        "SCREENER_SCREENING__DEFAULT_TREATMENT": "reject",
    }
    daemon = ScreenerDaemon.on_lab(workdir, lab, sentinels.master.url, env=env)
    daemon.start()
    return daemon


async def flag_on(lab: AsteriskLab, sipp: SippFactory, number: str) -> str:
    """A hotline call from ``number`` on ``lab``; agent1 presses *9. Returns the caller's
    Uniqueid once it is in the analysis queue."""
    ami = AmiObserver(lab.ami_port, lab.secrets.lab_user, lab.secrets.lab_secret)
    await ami.connect()
    try:
        await ami.action(
            {"Action": "Setvar", "Variable": "SCREENER_ANALYSIS_SECONDS", "Value": "1"}
        )
        agent = sipp.agent("agent1", dtmf_delay_ms=800)
        sipp.caller(DID_QUEUE, from_user=number)
        joined = await ami.wait_for(where(Event="QueueCallerJoin", Queue="hotline"), 15)
        await ami.wait_for(
            where(Event="QueueCallerJoin", Queue="screener-analysis", Channel=joined["Channel"]),
            20,
        )
        # released by the wrap-up: its SIPp exits, freeing the agent's port for the next call
        assert await agent.finished(20) == 0, agent.describe()
        return joined["Uniqueid"]
    finally:
        await ami.close()


async def wait_for(check: Any, timeout: float, what: str) -> None:
    import asyncio

    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.2)


async def test_two_pbxs_one_redis_behind_sentinel_share_what_they_learn(
    asterisk: AsteriskLab,
    second_asterisk: AsteriskLab,
    sentinels: SentinelSet,
    tmp_path: Path,
) -> None:
    one = daemon_for(asterisk, "pbx1", sentinels, tmp_path / "d1")
    two = daemon_for(second_asterisk, "pbx2", sentinels, tmp_path / "d2")
    sipp1 = SippFactory(asterisk, tmp_path / "sipp1")
    sipp2 = SippFactory(second_asterisk, tmp_path / "sipp2")
    redis = aioredis.Redis(port=sentinels.master.port, decode_responses=True)
    keys = KeySpace()
    try:
        uid1 = await flag_on(asterisk, sipp1, NUMBER)
        uid2 = await flag_on(second_asterisk, sipp2, NUMBER)

        async def both_stored() -> bool:
            ids = await redis.zrange(keys.flags, 0, -1)
            return {f"pbx1-{uid1}", f"pbx2-{uid2}"} <= set(ids)

        await wait_for(both_stored, 15, "both PBXs' flags in Redis, ids qualified by node")
        agents = await redis.zrange(keys.caller_agents("+8613812340777"), 0, -1)
        assert sorted(agents) == ["PJSIP/agent1@pbx1", "PJSIP/agent1@pbx2"]

        async def blocked() -> bool:
            return (
                two.metric("screener_auto_blocks_total") + one.metric("screener_auto_blocks_total")
                == 1
            )

        await wait_for(blocked, 10, "one automatic block from the two PBXs' flags")
        refused = sipp1.caller_refused(DID_QUEUE, from_user=NUMBER)  # back on the first PBX
        assert await refused.finished(20) == 0, refused.describe()
        assert refused.final_response() == 403

        # failover: the master dies; the Sentinel promotes the replica; flags go on
        old_master = sentinels.master.port
        sentinels.master.kill()
        started = time.monotonic()
        uid3 = await flag_on(second_asterisk, sipp2, "13812340888")

        async def promoted() -> bool:
            return sentinels.master_port() not in (None, old_master)

        await wait_for(promoted, 30, "the Sentinel promotes the replica")
        new = aioredis.Redis(port=sentinels.replica.port, decode_responses=True)
        try:

            async def third_stored() -> bool:
                return await new.exists(keys.flag(f"pbx2-{uid3}")) == 1

            await wait_for(third_stored, 30, "the flag made during the failover is stored")
            print(f"flag during failover stored {time.monotonic() - started:.1f} s after kill")
            for uid in (f"pbx1-{uid1}", f"pbx2-{uid2}"):  # confirmed flags survived
                assert await new.exists(keys.flag(uid)) == 1
        finally:
            await new.aclose()
    finally:
        await redis.aclose()
        for sipp in (sipp1, sipp2):
            sipp.close()
            print(sipp.describe())
        for d in (one, two):
            d.stop()
            print(d.tail(40))
