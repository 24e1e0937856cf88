"""screener.ami against a loopback fake AMI server (the real Asterisk is in tests/e2e)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from screener.ami import AmiClient, check_value, to_event
from screener.config import AmiSettings
from screener.errors import AmiError, ChannelNotFound, UnsafeValueError
from screener.metrics import Metrics
from screener.model import AmiConnected, AmiDisconnected, DtmfReceived, FlagRequested
from tests.ami_fake import FakeAmi, FakeChannel, event

FIXTURES = Path(__file__).parent / "fixtures" / "ami"


@pytest.fixture
async def fake():
    server = FakeAmi()
    await server.start()
    yield server
    await server.close()


def settings(port: int, **kw) -> AmiSettings:
    base = {
        "port": port,
        "secret": "s3cret",
        "action_timeout": 0.5,
        "ping_interval": 0.1,
        "watchdog_timeout": 0.3,
        "reconnect_delay": 0.1,
        "startup_retries": 2,
    }
    return AmiSettings(**(base | kw))


@pytest.fixture
async def client(fake):
    registry = CollectorRegistry()
    queue: asyncio.Queue = asyncio.Queue(100)
    c = AmiClient(settings(fake.port), queue, Metrics(registry), dtmf=True)
    await c.connect()
    assert isinstance(await asyncio.wait_for(queue.get(), 1), AmiConnected)
    c.registry = registry
    yield c
    await c.close()


async def next_event(queue: asyncio.Queue, kind: type, timeout: float = 1.0):
    async with asyncio.timeout(timeout):
        while True:
            ev = await queue.get()
            if isinstance(ev, kind):
                return ev


async def test_login_and_getvar(fake, client):
    fake.channels.append(FakeChannel("PJSIP/agent1-00000001", "1700000000.1", {"X": "y"}))
    assert await client.getvar("PJSIP/agent1-00000001", "X") == "y"
    assert await client.getvar("1700000000.1", "UNIQUEID") == "1700000000.1"
    with pytest.raises(ChannelNotFound):
        await client.getvar("PJSIP/nobody-00000009", "X")


async def test_action_ids_are_unguessable(fake, client):
    fake.channels.append(FakeChannel("PJSIP/a-00000001", "1.1"))
    for _ in range(3):
        await client.getvar("PJSIP/a-00000001", "UNIQUEID")
    ids = [a["ActionID"] for a in fake.actions if a.get("Action") == "Getvar"]
    assert len(set(ids)) == 3
    assert all(i.startswith("scr-") and len(i) == 28 for i in ids)


async def test_unsafe_values_are_never_sent(fake, client):
    before = len(fake.actions)
    with pytest.raises(UnsafeValueError):
        await client.getvar("PJSIP/a-1\r\nAction: Originate", "X")
    with pytest.raises(UnsafeValueError):
        await client.setvar("PJSIP/a-1", "X", "v\x00")
    assert len(fake.actions) == before


def test_check_value():
    assert check_value("PJSIP/agent1-0000001a") == "PJSIP/agent1-0000001a"
    for bad in ("a\rb", "a\nb", "a\x1bb", "\x7f"):
        with pytest.raises(UnsafeValueError):
            check_value(bad)


async def test_redirect_dual_and_extra_gone(fake, client):
    caller = FakeChannel("PJSIP/caller-00000001", "1.1")
    agent = FakeChannel("PJSIP/agent1-00000002", "1.2")
    fake.channels += [caller, agent]
    await client.redirect(caller.name, "screener-analysis", agent.name, "screener-wrapup")
    assert caller.variables["_context"] == "screener-analysis"
    assert agent.variables["_context"] == "screener-wrapup"
    # the agent hung up right after pressing: the caller is still moved, alone
    caller.variables.clear()
    await client.redirect(caller.name, "screener-analysis", "PJSIP/agent1-0000dead", "x")
    assert caller.variables["_context"] == "screener-analysis"
    with pytest.raises(ChannelNotFound):
        await client.redirect("PJSIP/gone-00000003", "screener-analysis")


async def test_channels_list(fake, client):
    fake.channels += [FakeChannel("PJSIP/agent1-00000001", "1.1"), FakeChannel("Local/x;1", "1.2")]
    assert await client.channels() == ["PJSIP/agent1-00000001", "Local/x;1"]


async def test_timeout_when_asterisk_is_hung(fake, client):
    fake.hung = True
    with pytest.raises(AmiError, match="no reply"):
        await client.action({"Action": "Ping"}, timeout=0.2)


async def test_events_become_model_events(fake, client):
    await fake.push(
        event(
            Event="UserEvent",
            Privilege="user,all",
            Channel="PJSIP/agent1-00000002",
            UserEvent="ScreenerFlag",
            AgentChannel="PJSIP/agent1-00000002",
            Token="a" * 40,
        )
        + event(
            Event="DTMFEnd",
            Channel="PJSIP/agent1-00000002",
            Uniqueid="1.2",
            Digit="*",
            DurationMs="120",
            Direction="Received",
        )
        + event(Event="DTMFEnd", Channel="PJSIP/x-1", Uniqueid="1.3", Digit="1", Direction="Sent")
        + event(Event="UserEvent", UserEvent="SomethingElse")
    )
    flag = await next_event(client.events, FlagRequested)
    assert (flag.agent_channel, flag.token) == ("PJSIP/agent1-00000002", "a" * 40)
    dtmf = await next_event(client.events, DtmfReceived)
    assert (dtmf.channel, dtmf.uniqueid, dtmf.digit) == ("PJSIP/agent1-00000002", "1.2", "*")
    await asyncio.sleep(0.05)
    assert client.events.empty()  # the Sent digit and the other UserEvent are ignored


def test_to_event_repeated_headers_never_validate():
    ev = to_event(
        {"Event": "UserEvent", "UserEvent": "ScreenerFlag", "AgentChannel": ["a", "b"]}, 0.0
    )
    assert isinstance(ev, FlagRequested)
    assert "\n" in ev.agent_channel


async def test_watchdog_reconnects_after_hang(fake, client):
    watchdog = asyncio.create_task(client.watchdog())
    try:
        fake.hung = True
        gone = await next_event(client.events, AmiDisconnected, timeout=3)
        assert gone.reason == "watchdog"
        fake.hung = False
        await next_event(client.events, AmiConnected, timeout=5)
        assert client.connected and fake.logins >= 2
        value = client.registry.get_sample_value(
            "screener_ami_reconnects_total", {"reason": "watchdog"}
        )
        assert value == 1
    finally:
        watchdog.cancel()


async def test_reconnect_after_connection_drop_does_not_replay(fake, client):
    fake.channels.append(FakeChannel("PJSIP/caller-00000001", "1.1"))
    fake.hung = True
    pending = asyncio.create_task(client.redirect("PJSIP/caller-00000001", "screener-analysis"))
    await asyncio.sleep(0.05)
    await fake.drop_clients()
    fake.hung = False
    await next_event(client.events, AmiDisconnected, timeout=2)
    with pytest.raises(AmiError):
        await pending
    await next_event(client.events, AmiConnected, timeout=5)
    await asyncio.sleep(0.3)  # panoramisk would replay after FullyBooted
    redirects = [a for a in fake.actions if a.get("Action") == "Redirect"]
    assert len(redirects) == 1


async def test_login_refused_fails_fast(fake):
    c = AmiClient(
        settings(fake.port, secret="wrong"), asyncio.Queue(), Metrics(CollectorRegistry())
    )
    with pytest.raises(AmiError, match="login refused"):
        await c.connect()


async def test_unreachable_fails_after_bounded_retries(caplog):
    from tests.lab.net import free_port

    c = AmiClient(
        settings(free_port(), startup_retries=1, action_timeout=0.2),
        asyncio.Queue(),
        Metrics(CollectorRegistry()),
    )
    with pytest.raises(AmiError, match="not ready after 1 retries"):
        await c.connect()
    assert "retries_left=0" in caplog.text


async def test_not_connected_actions_fail_cleanly():
    c = AmiClient(settings(1), asyncio.Queue(), Metrics(CollectorRegistry()))
    with pytest.raises(AmiError, match="not connected"):
        await c.getvar("PJSIP/a-1", "X")
    c.abort("test")  # nothing to abort: no error
    await c.close()


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.txt")), ids=lambda p: p.name)
async def test_recorded_transcripts_never_break_the_connection(fake, client, path):
    """Replaying what real Asterisk sent (including forged events) keeps the client healthy."""
    await fake.push(path.read_bytes())
    await asyncio.sleep(0.1)
    fake.channels.append(FakeChannel("PJSIP/after-00000001", "9.9"))
    assert await client.getvar("PJSIP/after-00000001", "UNIQUEID") == "9.9"
    assert client.registry.get_sample_value(
        "screener_errors_total", {"component": "ami_event"}
    ) in (
        None,
        0.0,
    )


async def test_dtmf_events_are_not_taken_in_unless_detection_is_on(fake):
    queue: asyncio.Queue = asyncio.Queue(100)
    c = AmiClient(settings(fake.port), queue, Metrics(CollectorRegistry()))
    await c.connect()
    try:
        await fake.push(
            event(
                Event="DTMFEnd",
                Channel="PJSIP/a-1",
                Uniqueid="1.1",
                Digit="*",
                Direction="Received",
            )
            + event(
                Event="UserEvent", UserEvent="ScreenerFlag", AgentChannel="PJSIP/a-1", Token="t"
            )
        )
        assert isinstance(await next_event(queue, FlagRequested), FlagRequested)
        assert all(
            not isinstance(e, DtmfReceived)
            for e in [queue.get_nowait() for _ in range(queue.qsize())]
        )
    finally:
        await c.close()
