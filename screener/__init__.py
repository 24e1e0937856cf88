"""screener: harassment screening for Asterisk call centres."""

__version__ = "0.1.0"
