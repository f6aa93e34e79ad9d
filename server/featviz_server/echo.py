"""Error messages that repeat what a client sent, bounded.

A client may send a layer name of megabytes; repeating it whole would make the error itself too
big for the client's trailer limit (8 KiB by default), so it would get RESOURCE_EXHAUSTED instead
of the INVALID_ARGUMENT that names its mistake. Every echo of user input goes through `echo`, and
every error message that may hold one (a bad request's) through `bounded`.
"""

from __future__ import annotations

ECHO_CHARS = 64
MESSAGE_BYTES = 512  # in UTF-8; the status carries it twice, percent-encoded and in the details


def echo(value: str) -> str:
    """`value` quoted as repr() does, cut to ECHO_CHARS characters and "…" when longer."""
    return repr(value if len(value) <= ECHO_CHARS else value[:ECHO_CHARS] + "…")


def bounded(message: str) -> str:
    """`message` cut to MESSAGE_BYTES of UTF-8 (at a character boundary), "…" marking a cut."""
    encoded = message.encode()
    if len(encoded) <= MESSAGE_BYTES:
        return message
    return encoded[: MESSAGE_BYTES - 3].decode(errors="ignore") + "…"
