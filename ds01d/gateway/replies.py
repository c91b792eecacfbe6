"""What the gateway answers itself: errors shaped like dockerd's, and response heads
written byte for byte when a response leaves HTTP framing behind.

The docker CLI, compose and the SDKs print the `message` of a JSON error body
("Error response from daemon: <message>"), so every refusal and failure is one
sentence there, never a traceback.
"""

from __future__ import annotations

import json
from http import HTTPStatus

import h11

#: The first words of every message about an unreachable or misbehaving engine.
ENGINE_DOWN = "Docker is not answering"


def error_events(status: int, message: str, close: bool = False) -> tuple[h11.Response, h11.Data]:
    """A JSON error response as dockerd writes one (`{"message": ...}` and a newline)."""
    body = (json.dumps({"message": message}) + "\n").encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    if close:
        headers.append(("Connection", "close"))
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    return h11.Response(status_code=status, headers=headers, reason=reason), h11.Data(data=body)


def engine_down(why: str) -> str:
    """The one sentence for an engine that cannot be reached or broke off."""
    return f"{ENGINE_DOWN} ({why}); try again in a moment, and tell an admin if it lasts."


def raw_head(response: h11.Response) -> bytes:
    """A response head as the engine sent it, for a connection that turns raw after it
    (h11 would otherwise add chunked framing to a body that has none)."""
    version = response.http_version.decode("ascii")
    lines = [f"HTTP/{version} {response.status_code} {response.reason.decode('latin-1')}".rstrip(" ").encode("latin-1")]
    lines += [name + b": " + value for name, value in response.headers.raw_items()]
    return b"\r\n".join(lines) + b"\r\n\r\n"
