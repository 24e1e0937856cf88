"""Flag latency on the real stack: the agent's DTMF to the caller's QueueCallerJoin in the
analysis queue (target <= 300 ms), through real SIP calls (SIPp), Asterisk 22, Redis and the
``screener run`` daemon.

Peer baseline, same run, same Asterisk: the flag handled by a bare AMI client (the lab's raw
observer) that sends the same Redirect as soon as it sees the ScreenerFlag UserEvent, without
any verification: the floor set by Asterisk itself.

Times are AMI event arrival times at one observer: DTMFEnd of the ``9`` on the agent channel ->
QueueCallerJoin of the caller in ``screener-analysis``. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
from pathlib import Path

from bench.ami_peer import percentile
from tests.lab import missing
from tests.lab.ami import AmiObserver, where
from tests.lab.asterisk import AsteriskLab
from tests.lab.asterisk_config import DID_QUEUE
from tests.lab.daemon import ScreenerDaemon
from tests.lab.flow import redirect_to_analysis
from tests.lab.prompts import install_lab_prompts
from tests.lab.redis import RedisServer
from tests.lab.sipp import SippFactory


async def one_call(ami: AmiObserver, sipp: SippFactory, *, bare: bool) -> float:
    mark = ami.mark()
    agent = sipp.agent("agent1", dtmf_delay_ms=800)
    caller = sipp.caller(DID_QUEUE, from_user="13812341234")
    joined = await ami.wait_for(where(Event="QueueCallerJoin", Queue="hotline"), 15, since=mark)
    caller_channel = joined["Channel"]
    if bare:
        flag = await ami.wait_for(
            where(Event="UserEvent", UserEvent="ScreenerFlag"), 15, since=mark
        )
        await redirect_to_analysis(ami, caller_channel, flag["AgentChannel"])
    moved = await ami.wait_for(
        where(Event="QueueCallerJoin", Queue="screener-analysis", Channel=caller_channel),
        15,
        since=mark,
    )
    nine = ami.find(
        lambda m: (
            m.event == "DTMFEnd" and m.get("Digit") == "9" and m.get("Direction") == "Received"
        ),
        since=mark,
    )[0]
    await caller.finished(30)
    await agent.finished(30)
    return (moved.received_at - nine.received_at) * 1000


async def series(ami: AmiObserver, sipp: SippFactory, calls: int, *, bare: bool) -> list[float]:
    return [await one_call(ami, sipp, bare=bare) for _ in range(calls)]


async def main(calls: int) -> None:
    problems = missing()
    if problems:
        raise SystemExit("lab not installed: " + "; ".join(problems))
    with tempfile.TemporaryDirectory(prefix="screener-bench-") as tmp:
        work = Path(tmp)
        redis = RedisServer(work / "redis")
        redis.start()
        install_lab_prompts(work / "prompts")
        lab = AsteriskLab(prompts=work / "prompts")
        lab.start()
        ami = AmiObserver(lab.ami_port, lab.secrets.lab_user, lab.secrets.lab_secret)
        await ami.connect()
        await ami.action(
            {"Action": "Setvar", "Variable": "SCREENER_ANALYSIS_SECONDS", "Value": "1"}
        )
        sipp = SippFactory(lab, work / "sipp")
        try:
            bare = await series(ami, sipp, calls, bare=True)
            daemon = ScreenerDaemon.on_lab(
                work / "screener", lab, redis.url, env={"SCREENER_LOG__LEVEL": "WARNING"}
            )
            daemon.start()
            try:
                ours = await series(ami, sipp, calls, bare=False)
            finally:
                daemon.stop()
        finally:
            sipp.close()
            await ami.close()
            lab.cleanup()
            redis.stop()
    result = {
        "benchmark": "flag_e2e",
        "calls": calls,
        "screener_p50_ms": round(statistics.median(ours), 1),
        "screener_p95_ms": round(percentile(ours, 95), 1),
        "screener_max_ms": round(max(ours), 1),
        "baseline_bare_ami_p50_ms": round(statistics.median(bare), 1),
        "baseline_bare_ami_max_ms": round(max(bare), 1),
        "target_ms": 300,
    }
    print(f"{'agent DTMF -> caller QueueCallerJoin':38}{'p50 ms':>9}{'max ms':>9}")
    print(f"{'screener daemon':38}{result['screener_p50_ms']:>9}{result['screener_max_ms']:>9}")
    print(
        f"{'bare AMI client (no verification)':38}{result['baseline_bare_ami_p50_ms']:>9}"
        f"{result['baseline_bare_ami_max_ms']:>9}"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20)
    asyncio.run(main(parser.parse_args().calls))
