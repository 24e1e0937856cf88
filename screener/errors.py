"""The exception hierarchy. The core raises; only boundaries catch (see daemon.py)."""


class ScreenerError(Exception):
    """Base of every error screener raises on purpose."""


class ConfigError(ScreenerError):
    """The configuration is invalid. The CLI prints it and exits 2, without a traceback."""


class StoreError(ScreenerError):
    """Redis failed or timed out (raised from ``redis.RedisError`` at the store edge)."""


class AmiError(ScreenerError):
    """An AMI action failed, timed out, or was refused before it was sent."""


class ChannelNotFound(AmiError):
    """Asterisk has no channel by that name or Uniqueid (hung up, or never existed)."""


class UnsafeValueError(AmiError):
    """A value would change the meaning of an AMI action (CR, LF or another control character)."""


class AgiProtocolError(ScreenerError):
    """A FastAGI dialogue went wrong. ``hint`` says what to look at."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


class LocalAgiError(AgiProtocolError):
    """Our side broke the FastAGI protocol (a bug in screener)."""


class RemoteAgiError(AgiProtocolError):
    """The peer sent bytes that are not FastAGI (garbage, oversized lines, hostile caller ID)."""


class ImportFormatError(ScreenerError):
    """An import file has bad lines; nothing was applied. ``problems`` lists (line, message)."""

    def __init__(self, problems: list[tuple[int, str]]) -> None:
        self.problems = problems
        lines = "; ".join(f"line {n}: {msg}" for n, msg in problems[:20])
        more = f" (+{len(problems) - 20} more)" if len(problems) > 20 else ""
        super().__init__(f"{len(problems)} bad line(s), nothing imported: {lines}{more}")
