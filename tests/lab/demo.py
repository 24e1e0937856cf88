"""``make demo``: bring up Redis, Asterisk 22 and screener, walk one harassment call through.

Everything is real: a redis-server, the Asterisk chroot built by scripts/setup.sh with the
shipped deploy/asterisk config, the screener daemon as ``screener run``, and SIP calls placed by
SIPp (a caller on the hotline, an agent who presses *9). The timeline printed comes from AMI
events; the flag from Redis through ``screener flags``. Then a PBX admin blocks the number with
``screener rules add``, and the same caller's next call is screened on entry (FastAGI): it hears
the "line fault" message and never reaches an agent.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.lab import REPO, missing
from tests.lab.ami import AmiMessage, AmiObserver, where
from tests.lab.asterisk import AsteriskLab
from tests.lab.asterisk_config import DID_QUEUE
from tests.lab.daemon import ScreenerDaemon
from tests.lab.prompts import install_lab_prompts
from tests.lab.redis import RedisServer
from tests.lab.sipp import SippFactory

CALLER = "13812341234"
ANALYSIS_SECONDS = 8


def say(t0: float, text: str) -> None:
    print(f"  {time.monotonic() - t0:6.2f}s  {text}", flush=True)


async def walk_the_call(lab: AsteriskLab, daemon: ScreenerDaemon, work: Path) -> None:
    ami = AmiObserver(lab.ami_port, lab.secrets.lab_user, lab.secrets.lab_secret)
    await ami.connect()
    await ami.action(
        {
            "Action": "Setvar",
            "Variable": "SCREENER_ANALYSIS_SECONDS",
            "Value": str(ANALYSIS_SECONDS),
        }
    )
    sipp = SippFactory(lab, work / "sipp")
    try:
        print(f"\nA caller ({CALLER}) dials the hotline {DID_QUEUE}; agent1 answers, hears abuse,")
        print("and presses *9 two seconds into the call.\n")
        agent = sipp.agent("agent1", dtmf="*9", dtmf_delay_ms=2000)
        caller = sipp.caller(DID_QUEUE, from_user=CALLER, from_name="Prank Caller")
        t0 = time.monotonic()
        joined = await ami.wait_for(where(Event="QueueCallerJoin", Queue="hotline"), 15)
        caller_channel = joined["Channel"]
        say(t0, f"caller {caller_channel} enters the hotline queue")
        connect = await ami.wait_for(where(Event="AgentConnect", Queue="hotline"), 15)
        agent_channel = connect["DestChannel"]
        say(t0, f"agent answers on {agent_channel}")
        nine = await ami.wait_for(
            where(Event="DTMFEnd", Channel=agent_channel, Digit="9", Direction="Received"), 15
        )
        say(t0, "agent presses *9 (the caller hears nothing)")
        await ami.wait_for(where(Event="UserEvent", UserEvent="ScreenerFlag"), 5)
        say(t0, "the flag key raises ScreenerFlag; screener verifies it on the live channel")
        moved: AmiMessage = await ami.wait_for(
            where(Event="QueueCallerJoin", Queue="screener-analysis", Channel=caller_channel), 10
        )
        ms = (moved.received_at - nine.received_at) * 1000
        say(t0, f"caller moved into the analysis queue ({ms:.0f} ms after the key)")
        moh = await ami.wait_for(
            where(Event="MusicOnHoldStart", Channel=caller_channel),
            10,
            since=next(i for i, m in enumerate(ami.messages) if m is moved),
        )
        say(
            t0,
            f'caller hears "You have entered the automatic call analysis system, please wait",'
            f" then the signal tone (class {moh['Class']})",
        )
        await ami.wait_for(where(Event="Hangup", Channel=agent_channel), 10)
        say(t0, "agent hears a beep and is released for the next call")
        await ami.wait_for(
            where(Event="Newexten", Channel=caller_channel, AppData="screener/analysis-complete"),
            ANALYSIS_SECONDS + 10,
        )
        say(t0, 'caller hears "Analysis complete, please hang up"')
        await ami.wait_for(where(Event="Hangup", Channel=caller_channel), 15)
        say(t0, "the call ends")
        await caller.finished(20)
        await agent.finished(20)
    finally:
        sipp.close()
        await ami.close()


def cli(redis: RedisServer, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCREENER_")}
    env["SCREENER_REDIS__URL"] = redis.url
    subprocess.run([sys.executable, "-m", "screener", *args], env=env, check=True, cwd=REPO)


async def walk_the_blocked_call(lab: AsteriskLab, redis: RedisServer, work: Path) -> None:
    print("\nA PBX admin blocks the number, with the line-fault treatment:\n")
    print(f"  $ screener rules add {CALLER} --treatment linefault --reason 'abuse, see flag'")
    cli(redis, "rules", "add", CALLER, "--treatment", "linefault", "--by", "demo-admin",
        "--reason", "abuse on the hotline, see the flag")  # fmt: skip
    print(f"\nThe same caller dials {DID_QUEUE} again; agent1 is free.\n")
    ami = AmiObserver(lab.ami_port, lab.secrets.lab_user, lab.secrets.lab_secret)
    await ami.connect()
    sipp = SippFactory(lab, work / "sipp-blocked")
    try:
        sipp.agent_idle("agent1")
        caller = sipp.caller(DID_QUEUE, from_user=CALLER, from_name="Prank Caller")
        t0 = time.monotonic()
        agi = await ami.wait_for(where(Event="Newexten", Application="AGI"), 15)
        say(t0, f"the dialplan asks screener over FastAGI ({agi['AppData'].split(',')[0]})")
        verdict = await ami.wait_for(
            lambda m: (
                m.event == "VarSet"
                and m.get("Variable") == "SCREENER_SCREEN"
                and bool(m.get("Value"))
            ),
            10,
        )
        ms = (verdict.received_at - agi.received_at) * 1000
        say(t0, f"screener answers SCREENER_SCREEN={verdict['Value']} ({ms:.1f} ms)")
        await ami.wait_for(where(Event="Newexten", AppData="screener/line-fault"), 10)
        say(t0, 'caller hears "Hello? Hello? Sorry, the line is faulty, please call again later."')
        await ami.wait_for(where(Event="Hangup", Channel=verdict["Channel"]), 15)
        say(t0, "the call ends; no agent's phone rang")
        await caller.finished(20)
        assert not ami.find(where(Event="DialBegin")), "an agent was dialled"
    finally:
        sipp.close()
        await ami.close()
    print("\nThe blocklist and its audit trail (screener rules list / audit):\n")
    cli(redis, "rules", "list")
    print()
    cli(redis, "rules", "audit")


def show_results(daemon: ScreenerDaemon, redis: RedisServer) -> None:
    print("\nWhat screener recorded (screener flags):\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCREENER_")}
    env["SCREENER_REDIS__URL"] = redis.url
    for args in (["flags"], ["flags", "--json"]):
        subprocess.run([sys.executable, "-m", "screener", *args], env=env, check=True, cwd=REPO)
    print("\nFrom /metrics:")
    for name in (
        "screener_flags_total",
        "screener_flag_requests_total",
        "screener_attacks_total",
        "screener_flag_redirect_seconds_count",
        "screener_screens_total",
    ):
        print(f"  {name} = {daemon.metric(name):g}")


async def main() -> int:
    problems = missing()
    if problems:
        print("demo: the lab is not installed: " + "; ".join(problems), file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="screener-demo-") as tmp:
        work = Path(tmp)
        print("Starting redis-server, Asterisk 22 (deploy/asterisk config) and screener...")
        redis = RedisServer(work / "redis")
        redis.start()
        install_lab_prompts(work / "prompts")
        lab = AsteriskLab(prompts=work / "prompts")
        daemon = None
        try:
            lab.start()
            print(f"  Asterisk up in {lab.startup_seconds:.2f}s (SIP 127.0.0.1:{lab.sip_port})")
            daemon = ScreenerDaemon.on_lab(
                work / "screener", lab, redis.url, env={"SCREENER_LOG__LEVEL": "INFO"}
            )
            daemon.start()
            print(f"  screener up (HTTP 127.0.0.1:{daemon.http_port}, logged in to AMI)")
            await walk_the_call(lab, daemon, work)
            await walk_the_blocked_call(lab, redis, work)
            show_results(daemon, redis)
            print("\nscreener's log of the flag and the screens:")
            for line in daemon.logs().splitlines():
                if " flag " in line or " screen verdict" in line:
                    print("  " + line)
        finally:
            if daemon is not None:
                daemon.stop()
            lab.stop()
            lab.cleanup()
            redis.stop()
    print("\nDemo complete.")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
