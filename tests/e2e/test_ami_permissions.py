"""The shipped least-privilege AMI user (``deploy/asterisk/manager_screener.conf``) on a real
Asterisk 22: what it can do, what Asterisk refuses it, and which events reach it.

It logs in as ``screener`` with a raw AMI client (``tests/lab/ami.py``), exactly as the shipped
file is installed in the lab (only the secret is replaced). What the grant allows beyond
screener's needs is listed in ``ALLOWED_BUT_UNUSED`` and checked too, so a change of Asterisk's
permission classes (or of the file) shows up here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.lab.ami import AmiError, AmiMessage, AmiObserver, where
from tests.lab.asterisk import AsteriskLab

pytestmark = [pytest.mark.lab, pytest.mark.timeout(60)]

GONE = "PJSIP/no-such-channel-00000001"
DENIED = "Permission denied"


@pytest.fixture
async def screener_ami(asterisk: AsteriskLab) -> AsyncIterator[AmiObserver]:
    """Logged in as the shipped ``screener`` user (read=call,user,dtmf write=call,reporting)."""
    ami = AmiObserver(
        asterisk.ami_port, asterisk.secrets.screener_user, asterisk.secrets.screener_secret
    )
    await ami.connect()
    yield ami
    await ami.close()


# What screener sends (ami.py): each must be *permitted*. On a channel that does not exist the
# permitted ones fail with a channel error, never with "Permission denied".
NEEDED = [
    ({"Action": "Ping"}, "Success", None),
    ({"Action": "Getvar", "Variable": "SCREENER_AGI"}, "Success", None),
    ({"Action": "Getvar", "Channel": GONE, "Variable": "SCREENER_FLAG_TOKEN"}, "Error", "channel"),
    (
        {"Action": "Redirect", "Channel": GONE, "Context": "screener-analysis", "Exten": "s",
         "Priority": "1", "ExtraChannel": GONE, "ExtraContext": "screener-wrapup",
         "ExtraExten": "s", "ExtraPriority": "1"},
        "Error",
        "does not exist",
    ),
]  # fmt: skip

# What an intruder holding screener's secret would want: all refused by Asterisk.
REFUSED = [
    {"Action": "Originate", "Channel": "Local/1@hotline", "Application": "Wait", "Data": "1"},
    {"Action": "Command", "Command": "core show version"},
    {"Action": "GetConfig", "Filename": "manager.conf"},
    {"Action": "GetConfigJSON", "Filename": "manager.conf"},
    {"Action": "UpdateConfig", "SrcFilename": "manager.conf", "DstFilename": "manager.conf",
     "Action-000000": "NewCat", "Cat-000000": "intruder"},
    {"Action": "CreateConfig", "Filename": "intruder.conf"},
    {"Action": "DBPut", "Family": "blacklist", "Key": "13812341234", "Val": "1"},
    {"Action": "DBDel", "Family": "blacklist", "Key": "13812341234"},
    {"Action": "DBDelTree", "Family": "blacklist"},
    {"Action": "ModuleLoad", "Module": "app_system.so", "LoadType": "load"},
    {"Action": "Reload"},
    {"Action": "Filter", "Operation": "Add", "Filter": "Event: Newchannel"},  # its filters stay
    {"Action": "UserEvent", "UserEvent": "ScreenerFlag", "AgentChannel": GONE, "Token": "x"},
    {"Action": "QueueAdd", "Queue": "hotline", "Interface": "PJSIP/intruder"},
    {"Action": "QueuePause", "Queue": "hotline", "Interface": "PJSIP/agent1", "Paused": "true"},
    {"Action": "PJSIPShowEndpoints"},
]  # fmt: skip

# Permitted by write=call or write=reporting although screener never sends them. Documented in
# deploy/asterisk/README.md: `call` is the class of Getvar and Redirect and cannot be split, so
# it also allows Setvar (including globals), Hangup and transfers of live channels; `reporting`
# (needed for CoreShowChannels) also allows read-only status actions, ShowDialPlan, DBGet and
# LoggerRotate. The "Events" action needs no class but cannot widen the read classes or the
# event filters (see the filter test).
ALLOWED_BUT_UNUSED = [
    ({"Action": "Setvar", "Variable": "SCREENER_SECURITY_PROBE", "Value": "1"}, "Success"),
    ({"Action": "Setvar", "Channel": GONE, "Variable": "X", "Value": "1"}, "Error"),
    ({"Action": "Hangup", "Channel": GONE}, "Error"),
    ({"Action": "BlindTransfer", "Channel": GONE, "Exten": "1", "Context": "x"}, "Error"),
    ({"Action": "DBGet", "Family": "screener-security", "Key": "none"}, "Error"),
    ({"Action": "ShowDialPlan", "Context": "screener-wrapup"}, "Success"),
    ({"Action": "CoreStatus"}, "Success"),
    ({"Action": "CoreSettings"}, "Success"),
    ({"Action": "LoggerRotate"}, "Success"),
]


@pytest.mark.parametrize(
    ("fields", "response", "message"), NEEDED, ids=[f["Action"] for f, _, _ in NEEDED]
)
async def test_the_screener_user_can_send_what_screener_needs(
    screener_ami: AmiObserver, fields: dict[str, str], response: str, message: str | None
) -> None:
    reply = await screener_ami.action(fields)
    assert reply.response == response, reply
    assert reply.get("Message") != DENIED
    if message is not None:
        assert message in (reply.get("Message") or "").lower(), reply


async def test_the_screener_user_can_list_channels(
    asterisk: AsteriskLab, screener_ami: AmiObserver, ami_observer: AmiObserver
) -> None:
    """CoreShowChannels (the desktop button) lists a live channel."""
    await ami_observer.action(
        {"Action": "Originate", "Channel": "Local/s@screener-wrapup", "Application": "Wait",
         "Data": "5", "Async": "true"}
    )  # fmt: skip
    await ami_observer.wait_for(lambda m: m.event == "Newchannel", 5)
    channels = await screener_ami.action_list({"Action": "CoreShowChannels"})
    assert any((m.get("Channel") or "").startswith("Local/s@screener-wrapup") for m in channels)


@pytest.mark.parametrize("fields", REFUSED, ids=[f["Action"] for f in REFUSED])
async def test_asterisk_refuses_the_screener_user_everything_else(
    asterisk: AsteriskLab, screener_ami: AmiObserver, fields: dict[str, str]
) -> None:
    reply = await screener_ami.action(fields)
    assert (reply.response, reply.get("Message")) == ("Error", DENIED), reply


async def test_refused_actions_had_no_effect(
    asterisk: AsteriskLab, screener_ami: AmiObserver, ami_observer: AmiObserver
) -> None:
    """Belt and braces for the two that would hurt most: no call placed, no AstDB entry."""
    mark = ami_observer.mark()
    for fields in REFUSED[:1] + REFUSED[6:7]:
        await screener_ami.action(fields)
    await asyncio.sleep(0.5)
    assert not ami_observer.find(lambda m: m.event == "Newchannel", since=mark)
    got = await ami_observer.action(
        {"Action": "DBGet", "Family": "blacklist", "Key": "13812341234"}
    )
    assert got.response == "Error"


@pytest.mark.parametrize(
    ("fields", "response"), ALLOWED_BUT_UNUSED, ids=[f["Action"] for f, _ in ALLOWED_BUT_UNUSED]
)
async def test_what_the_grant_allows_beyond_screeners_needs_is_known(
    screener_ami: AmiObserver, fields: dict[str, str], response: str
) -> None:
    reply = await screener_ami.action(fields)
    assert reply.get("Message") != DENIED, reply
    assert reply.response == response, reply


async def test_a_wrong_secret_is_refused(asterisk: AsteriskLab) -> None:
    ami = AmiObserver(asterisk.ami_port, asterisk.secrets.screener_user, "not-the-secret")
    try:
        with pytest.raises(AmiError):
            await ami.connect()
    finally:
        await ami.close()


def _events(ami: AmiObserver, since: int = 0) -> list[AmiMessage]:
    return [m for m in ami.messages[since:] if "Event" in m]


async def test_the_screener_user_receives_only_userevent_and_dtmfend(
    asterisk: AsteriskLab, screener_ami: AmiObserver, ami_observer: AmiObserver
) -> None:
    """Calls raise dozens of events (each one a place a hostile caller ID can appear); the
    screener user's filters let through only the two kinds it listens to, even after it asks
    for every event with the Events action."""
    reply = await screener_ami.action({"Action": "Events", "EventMask": "on"})
    assert reply.response == "Success"
    seen_in_all: set[str | None] = set()
    for round_ in range(2):
        since = len(screener_ami.messages)
        lab_since = ami_observer.mark()
        await ami_observer.action(
            {"Action": "UserEvent", "UserEvent": "SecurityProbe", "Round": str(round_)}
        )
        # A local call that answers at once (screener-wrapup plays a beep and hangs up)
        await ami_observer.action(
            {"Action": "Originate", "Channel": "Local/s@screener-wrapup", "Application": "Wait",
             "Data": "1", "Async": "true"}
        )  # fmt: skip
        new = await ami_observer.wait_for(where(Event="Newchannel"), 5, since=lab_since)
        channel = new["Channel"]
        await ami_observer.action({"Action": "PlayDTMF", "Channel": channel, "Digit": "9"})
        await ami_observer.wait_for(where(Event="Hangup", Channel=channel), 10, since=lab_since)
        await screener_ami.wait_for(
            where(Event="UserEvent", UserEvent="SecurityProbe"), 5, since=since
        )
        await asyncio.sleep(0.3)
        seen_by_lab = {m.event for m in _events(ami_observer, lab_since)}
        assert {"Newchannel", "Hangup", "UserEvent"} <= seen_by_lab  # the calls were not silent
        seen = {m.event for m in _events(screener_ami, since)}
        assert seen <= {"UserEvent", "DTMFEnd"}, seen
        assert len(seen_by_lab) > 5
        seen_in_all |= seen
    assert seen_in_all == {"UserEvent", "DTMFEnd"}  # both kinds do get through
    print(f"lab user saw {sorted(map(str, seen_by_lab))}")
    print(f"screener user saw {sorted(map(str, seen_in_all))}")
