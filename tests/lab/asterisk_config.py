"""The complete configuration of one lab Asterisk, rendered as text (no I/O, no processes).

The shipped ``deploy/asterisk/*.conf`` files are included verbatim (copied next to these files
and ``#include``d), except ``manager_screener.conf`` whose secret is replaced in the copy. Around
them the lab adds what a call centre would have: a ``hotline`` context that enters
``screener-inbound`` and then queues the caller, agents on PJSIP, and a full-privilege AMI user
``lab`` for observation.

Call routing (DIDs are dialled by the SIPp caller):

- ``DID_QUEUE`` (and any other number): ``Queue(hotline)``, member ``PJSIP/agent1``
- ``DID_LOCAL``: ``Queue(hotline-local)``, member ``Local/agent2@agent-local`` -> agent2
- ``DID_LOCAL_PREDIAL``: ``Queue(hotline-local-predial)``, member
  ``Local/agent2-predial@agent-local``, whose ``Dial(PJSIP/agent2)`` has the pre-dial handler too
- ``DID_DIRECT``: ``Dial(PJSIP/agent3)``, no queue
- ``DID_NO_FEATURE``: ``Dial(PJSIP/agent3,,t)`` without the pre-dial handler (a PBX whose
  dialplan can't get the flag key: screener's DTMF detection mode). Its transfer option keeps the
  bridge out of native RTP, so Asterisk sees (and reports) the digits
- ``DID_INTERNAL``: ``Dial(PJSIP/agent3)`` with the flag key but not through
  ``screener-inbound`` (an internal call)
- ``DID_SHORT``: ``Dial(PJSIP/x)``: an agent with a one-letter endpoint name, so that a forged
  event naming its channel fits in the 79 characters Asterisk keeps of a caller number
- ``2001``-``2003`` in ``agents-internal``: the agents' own calls (blind-transfer targets)

Every agent leg gets the pre-dial handler ``screener-agent-predial`` (flag key ``*9``) from the
Queue()/Dial() that creates it. For ``hotline-local`` that is the Local channel the queue dials,
as on a site that adds ``b()`` to its Queue() only; ``hotline-local-predial`` also puts it on the
Dial() inside the Local channel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.lab import DEPLOY_ASTERISK

DID_QUEUE = "4008001000"
DID_LOCAL = "4008002000"
DID_LOCAL_PREDIAL = "4008002100"
DID_DIRECT = "4008003000"
DID_NO_FEATURE = "4008004000"
DID_INTERNAL = "4008005000"
DID_SHORT = "4008006000"
AGENTS = ("agent1", "agent2", "agent3", "x")
PREDIAL = "b(screener-agent-predial^s^1)"
SHIPPED_FILES = (
    "extensions_screener.conf",
    "features_screener.conf",
    "queues_screener.conf",
    "musiconhold_screener.conf",
    "manager_screener.conf",
)

# Modules: an explicit list (autoload=no) starts in well under a second and keeps the noise out
# of the logs. Asterisk loads what these require by itself (e.g. res_pjsip -> res_sorcery_*).
MODULES = (
    # channels, SIP, media
    "chan_pjsip.so", "res_pjsip.so", "res_pjsip_session.so", "res_pjsip_sdp_rtp.so",
    "res_pjsip_endpoint_identifier_ip.so", "res_pjsip_caller_id.so", "res_pjsip_refer.so",
    "res_pjsip_pubsub.so", "res_pjsip_dtmf_info.so", "res_pjsip_rfc3326.so",
    "res_pjsip_diversion.so", "res_pjsip_header_funcs.so", "res_pjsip_logger.so",
    "res_pjsip_nat.so", "res_pjproject.so", "res_rtp_asterisk.so", "res_sorcery_config.so",
    "res_sorcery_memory.so", "res_sorcery_astdb.so", "res_timing_timerfd.so",
    # bridging and features
    "bridge_simple.so", "bridge_native_rtp.so", "bridge_softmix.so", "bridge_holding.so",
    "bridge_builtin_features.so", "bridge_builtin_interval_features.so",
    # dialplan, applications, functions
    "pbx_config.so", "app_dial.so", "app_queue.so", "app_playback.so", "app_stack.so",
    "app_userevent.so", "app_echo.so", "app_verbose.so", "app_senddtmf.so", "app_db.so",
    "app_blind_transfer.so", "app_channelredirect.so", "app_softhangup.so", "app_exec.so",
    "app_read.so",
    "res_agi.so", "res_speech.so", "res_musiconhold.so",
    "func_base64.so", "func_callerid.so", "func_channel.so", "func_cut.so", "func_db.so",
    "func_global.so", "func_logic.so", "func_math.so", "func_rand.so", "func_sha1.so",
    "func_strings.so", "func_uri.so", "func_hangupcause.so", "func_pjsip_endpoint.so",
    # codecs and formats (the prompts are WAV, the core sounds GSM)
    "codec_ulaw.so", "codec_alaw.so", "codec_a_mu.so", "codec_gsm.so", "codec_resample.so",
    "format_wav.so", "format_pcm.so", "format_gsm.so", "format_sln.so", "format_wav_gsm.so",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class LabPorts:
    """Everything one lab Asterisk listens on, and where its agents' SIPp answer."""

    sip: int
    ami: int
    agi: int
    rtp_start: int
    rtp_end: int
    agents: dict[str, int]
    callers: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class LabSecrets:
    lab_user: str = "lab"
    lab_secret: str = field(default="lab-secret", repr=False)
    screener_user: str = "screener"
    screener_secret: str = field(default="screener-secret", repr=False)


def render_config(
    root: str,
    ports: LabPorts,
    secrets: LabSecrets,
    *,
    extra_dialplan: str = "",
    dialplan_prelude: str = "",
    verbose: int = 3,
) -> dict[str, str]:
    """File name -> text for the instance's etc dir. ``root`` is the instance dir in the chroot.

    ``dialplan_prelude`` goes into ``extensions.conf`` before ``#include extensions_screener.conf``
    (e.g. a site's own ``[globals]``), ``extra_dialplan`` at its end. ``verbose`` is the root
    verbosity (3: every dialplan step is written to the full log; 0: none).
    """
    files = {
        "asterisk.conf": _asterisk_conf(root, verbose),
        "modules.conf": _modules_conf(),
        "logger.conf": _logger_conf(),
        "rtp.conf": f"[general]\nrtpstart = {ports.rtp_start}\nrtpend = {ports.rtp_end}\n",
        "pjsip.conf": _pjsip_conf(ports),
        "extensions.conf": _extensions_conf(dialplan_prelude, extra_dialplan),
        "features.conf": _features_conf(),
        "queues.conf": _queues_conf(),
        "musiconhold.conf": _MUSICONHOLD,
        "manager.conf": _manager_conf(ports, secrets),
        "cdr.conf": "[general]\nenable = no\n",
        "cel.conf": "[general]\nenable = no\n",
        "indications.conf": _INDICATIONS,
        "pjproject.conf": "[log_mappings]\ntype = log_mappings\nasterisk_error = 0\n"
        "asterisk_warning = 2\nasterisk_debug = 3,4,5\n",
        "ccss.conf": "[general]\n",
        "acl.conf": "",
        "udptl.conf": "[general]\n",
    }
    for name in SHIPPED_FILES:
        files[name] = (DEPLOY_ASTERISK / name).read_text()
    files["manager_screener.conf"] = rewrite_secret(
        files["manager_screener.conf"], secrets.screener_user, secrets.screener_secret
    )
    files["extensions_screener.conf"] = rewrite_agi_port(
        files["extensions_screener.conf"], ports.agi
    )
    return files


def rewrite_agi_port(text: str, port: int) -> str:
    """Point the shipped ``SCREENER_AGI`` global at the lab's daemon port."""
    shipped = "SCREENER_AGI=agi://127.0.0.1:4573/screen"
    if shipped not in text:
        raise ValueError("extensions_screener.conf no longer sets SCREENER_AGI as expected")
    return text.replace(shipped, f"SCREENER_AGI=agi://127.0.0.1:{port}/screen")


def rewrite_secret(text: str, user: str, secret: str) -> str:
    """Replace ``secret = ...`` inside ``[user]`` (the shipped file has a placeholder)."""
    out, section = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and "]" in stripped:
            section = stripped[1 : stripped.index("]")]
        elif section == user and stripped.split("=", 1)[0].strip() == "secret":
            line = f"secret = {secret}"
        out.append(line)
    return "\n".join(out) + "\n"


def _asterisk_conf(root: str, verbose: int = 3) -> str:
    return f"""[directories]
astetcdir => {root}/etc
astmoddir => /usr/lib/x86_64-linux-gnu/asterisk/modules
astvarlibdir => {root}/lib
astdbdir => {root}/db
astkeydir => {root}/lib
astdatadir => {root}/data
astagidir => /usr/share/asterisk/agi-bin
astspooldir => {root}/spool
astrundir => {root}/run
astlogdir => {root}/log
astcachedir => {root}/cache
astsbindir => /usr/sbin

[options]
verbose = {verbose}
debug = 0
documentation_language = en_US
transmit_silence = no
hideconnect = yes
"""


def _modules_conf() -> str:
    lines = ["[modules]", "autoload = no"]
    lines += [f"load => {name}" for name in MODULES]
    return "\n".join(lines) + "\n"


def _logger_conf() -> str:
    return """[general]
dateformat = %F %T.%3q
queue_log = yes
queue_log_to_file = yes

[logfiles]
full => notice,warning,error,verbose,dtmf
"""


def _endpoint(name: str, context: str, extra: str = "") -> str:
    return f"""[{name}]
type = endpoint
transport = transport-udp
context = {context}
disallow = all
allow = ulaw,alaw
dtmf_mode = rfc4733
direct_media = no
rtp_symmetric = yes
force_rport = yes
rewrite_contact = no
{extra}"""


def _pjsip_conf(ports: LabPorts) -> str:
    parts = [
        f"""[global]
type = global
user_agent = screener-lab
endpoint_identifier_order = ip

[transport-udp]
type = transport
protocol = udp
bind = 127.0.0.1:{ports.sip}
""",
        _endpoint("caller", "hotline", "trust_id_inbound = yes\n"),
        "[caller]\ntype = identify\nendpoint = caller\n"
        + "".join(f"match = 127.0.0.1:{port}\n" for port in ports.callers),
    ]
    for agent, port in ports.agents.items():
        parts.append(_endpoint(agent, "agents-internal", f"aors = {agent}\n"))
        parts.append(f"[{agent}]\ntype = aor\ncontact = sip:{agent}@127.0.0.1:{port}\n")
    return "\n".join(parts)


def _extensions_conf(prelude: str, extra_dialplan: str) -> str:
    return f"""[general]
static = yes
writeprotect = yes
autofallthrough = yes

{prelude}
#include extensions_screener.conf

[hotline]
exten => {DID_QUEUE},1,Gosub(screener-inbound,s,1(${{EXTEN}},hotline))
 same => n,Queue(hotline,{PREDIAL},,,60)
 same => n,Hangup()
exten => {DID_LOCAL},1,Gosub(screener-inbound,s,1(${{EXTEN}},hotline-local))
 same => n,Queue(hotline-local,{PREDIAL},,,60)
 same => n,Hangup()
exten => {DID_LOCAL_PREDIAL},1,Gosub(screener-inbound,s,1(${{EXTEN}},hotline-local-predial))
 same => n,Queue(hotline-local-predial,{PREDIAL},,,60)
 same => n,Hangup()
exten => {DID_DIRECT},1,Gosub(screener-inbound,s,1(${{EXTEN}}))
 same => n,Dial(PJSIP/agent3,60,{PREDIAL})
 same => n,Hangup()
exten => {DID_NO_FEATURE},1,Gosub(screener-inbound,s,1(${{EXTEN}}))
 same => n,Dial(PJSIP/agent3,60,t)
 same => n,Hangup()
exten => {DID_INTERNAL},1,Dial(PJSIP/agent3,60,{PREDIAL})
 same => n,Hangup()
exten => {DID_SHORT},1,Gosub(screener-inbound,s,1(${{EXTEN}}))
 same => n,Dial(PJSIP/x,60,{PREDIAL})
 same => n,Hangup()
exten => _X.,1,Gosub(screener-inbound,s,1(${{EXTEN}},hotline))
 same => n,Queue(hotline,{PREDIAL},,,60)
 same => n,Hangup()

[agent-local]
exten => agent2,1,Dial(PJSIP/agent2,60)
 same => n,Hangup()
exten => agent2-predial,1,Dial(PJSIP/agent2,60,{PREDIAL})
 same => n,Hangup()

[agents-internal]
exten => _200[1-3],1,Dial(PJSIP/agent${{EXTEN:3}},60,{PREDIAL})
 same => n,Hangup()

{extra_dialplan}
"""


def _features_conf() -> str:
    return """[general]
featuredigittimeout = 1500

[featuremap]

[applicationmap]
#include features_screener.conf
"""


def _queues_conf() -> str:
    return """[general]
persistentmembers = no
shared_lastcall = no

[hotline]
strategy = ringall
timeout = 20
retry = 1
wrapuptime = 0
joinempty = yes
leavewhenempty = no
ringinuse = no
announce-frequency = 0
periodic-announce-frequency = 0
member => PJSIP/agent1,0,agent1

[hotline-local]
strategy = ringall
timeout = 20
retry = 1
wrapuptime = 0
joinempty = yes
leavewhenempty = no
ringinuse = no
announce-frequency = 0
periodic-announce-frequency = 0
member => Local/agent2@agent-local,0,agent2,PJSIP/agent2

[hotline-local-predial]
strategy = ringall
timeout = 20
retry = 1
wrapuptime = 0
joinempty = yes
leavewhenempty = no
ringinuse = no
announce-frequency = 0
periodic-announce-frequency = 0
member => Local/agent2-predial@agent-local,0,agent2,PJSIP/agent2

#include queues_screener.conf
"""


def _manager_conf(ports: LabPorts, secrets: LabSecrets) -> str:
    return f"""[general]
enabled = yes
port = {ports.ami}
bindaddr = 127.0.0.1
displayconnects = no
timestampevents = no

#include manager_screener.conf

[{secrets.lab_user}]
secret = {secrets.lab_secret}
deny = 0.0.0.0/0.0.0.0
permit = 127.0.0.1/255.255.255.255
read = all
write = all
writetimeout = 5000
"""


# The hotline queues play the class "default" while callers wait; the lab fills its directory
# (see tests.lab.prompts) so that it is told apart from the screener tone in MusicOnHoldStart.
_MUSICONHOLD = """[general]

[default]
mode = files
directory = moh/lab-default

#include musiconhold_screener.conf
"""

_INDICATIONS = """[general]
country = us

[us]
description = United States / North America
ringcadence = 2000,4000
dial = 350+440
busy = 480+620/500,0/500
ring = 440+480/2000,0/4000
congestion = 480+620/250,0/250
callwaiting = 440/300,0/10000
dialrecall = !350+440/100,!0/100,!350+440/100,!0/100,!350+440/100,!0/100,350+440
record = 1400/500,0/15000
info = !950/330,!1400/330,!1800/330,0
stutter = !350+440/100,!0/100,!350+440/100,!0/100,350+440
"""
