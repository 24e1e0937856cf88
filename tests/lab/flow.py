"""The screener flow as seen on AMI: the flag, the daemon's redirect, the analysis and wrap-up.

Tests without the daemon play its part with :func:`redirect_to_analysis`; tests with the daemon
only wait. Either way :func:`expect_analysis` and :func:`expect_wrapup` check what the caller and
the agent go through, and return the events with their arrival times.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from screener.model import Flag as StoredFlag
from screener.store import Store
from tests.lab.ami import AmiMessage, AmiObserver, Predicate, where

ANALYSIS_CONTEXT = "screener-analysis"
WRAPUP_CONTEXT = "screener-wrapup"
ANALYSIS_QUEUE = "screener-analysis"
MOH_CLASS = "screener-analysis-en"  # entry prompt once, then the tone (musiconhold_screener.conf)


@dataclass(frozen=True, slots=True)
class Flag:
    """A ``UserEvent: ScreenerFlag`` raised by the flag key on an agent's channel."""

    agent_channel: str
    token: str
    event: AmiMessage


@dataclass(frozen=True, slots=True)
class Analysis:
    """What the flagged caller went through, in order."""

    joined: AmiMessage  # QueueCallerJoin Queue: screener-analysis
    moh: AmiMessage  # MusicOnHoldStart Class: screener-analysis-en (prompt, then tone)
    complete: AmiMessage  # Newexten Playback screener/analysis-complete
    hangup: AmiMessage


def is_flag(message: AmiMessage) -> bool:
    """A ScreenerFlag UserEvent shaped like the dialplan's (forged ones may lack AgentChannel)."""
    return (
        message.event == "UserEvent"
        and message.get("UserEvent") == "ScreenerFlag"
        and bool(message.get("AgentChannel"))
        and bool(message.get("Token"))
    )


async def wait_flag(ami: AmiObserver, *, since: int = 0, timeout: float = 15.0) -> Flag:
    """The next flag from ``since`` (see :func:`is_flag`)."""
    event = await ami.wait_for(is_flag, timeout, since=since)
    return Flag(event["AgentChannel"], event["Token"], event)


async def redirect_to_analysis(
    ami: AmiObserver, caller_channel: str, agent_channel: str
) -> AmiMessage:
    """What the daemon does: caller -> screener-analysis, agent -> screener-wrapup, one action."""
    return await ami.action(
        {
            "Action": "Redirect",
            "Channel": caller_channel,
            "Context": ANALYSIS_CONTEXT,
            "Exten": "s",
            "Priority": "1",
            "ExtraChannel": agent_channel,
            "ExtraContext": WRAPUP_CONTEXT,
            "ExtraExten": "s",
            "ExtraPriority": "1",
        }
    )


def _playback(channel: str, sound: str) -> Predicate:
    return where(Event="Newexten", Channel=channel, Application="Playback", AppData=sound)


async def expect_analysis(
    ami: AmiObserver,
    caller_channel: str,
    *,
    since: int = 0,
    timeout: float = 30.0,
    moh_class: str = MOH_CLASS,
) -> Analysis:
    """Wait for the caller's whole analysis: queue join, its prompt-then-tone music on hold,
    the closing prompt, hangup."""
    joined = await ami.wait_for(
        where(Event="QueueCallerJoin", Queue=ANALYSIS_QUEUE, Channel=caller_channel),
        timeout,
        since=since,
    )
    moh = await ami.wait_for(
        where(Event="MusicOnHoldStart", Class=moh_class, Channel=caller_channel),
        timeout,
        since=since,
    )
    complete = await ami.wait_for(
        _playback(caller_channel, "screener/analysis-complete"), timeout, since=since
    )
    hangup = await ami.wait_for(where(Event="Hangup", Channel=caller_channel), timeout, since=since)
    return Analysis(joined, moh, complete, hangup)


async def expect_wrapup(
    ami: AmiObserver, agent_channel: str, *, since: int = 0, timeout: float = 10.0
) -> AmiMessage:
    """Wait for the agent's beep in screener-wrapup, then its hangup; returns the Hangup."""
    await ami.wait_for(
        where(Event="Newexten", Channel=agent_channel, Context=WRAPUP_CONTEXT, AppData="beep"),
        timeout,
        since=since,
    )
    return await ami.wait_for(where(Event="Hangup", Channel=agent_channel), timeout, since=since)


async def answered(ami: AmiObserver, queue: str = "hotline") -> tuple[str, str, str]:
    """Wait for a hotline call to reach an agent: (caller channel, its uniqueid, agent channel)."""
    joined = await ami.wait_for(where(Event="QueueCallerJoin", Queue=queue), 15)
    connect = await ami.wait_for(where(Event="AgentConnect", Queue=queue), 15)
    return joined["Channel"], joined["Uniqueid"], connect["DestChannel"]


async def wait_flag_stored(store: Store, flag_id: str, timeout: float = 10.0) -> StoredFlag:
    """Poll Redis until the flag is there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        flag = await store.get_flag(flag_id)
        if flag is not None:
            return flag
        await asyncio.sleep(0.1)
    raise AssertionError(f"flag {flag_id} not in Redis after {timeout}s")
