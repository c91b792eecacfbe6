"""The door in front of dockerd: a streaming HTTP/1.1 proxy on the standard Docker socket
that knows each caller by `SO_PEERCRED` and asks a `Policy` about every request before
forwarding it.

Transport (`server`: accept and lifetime; `listener`: the socket from systemd;
`exchange`: one client connection's request/response cycles; `http_side`: one end of it
with its HTTP state; `body_relay`: streamed bodies passed on as they came, past h11;
`body_framing`: where such a body ends; `pump`: bytes from one socket to another in the
event loop's callbacks; `bridge`: raw bytes both ways once a connection is hijacked;
`replies`: what the gateway answers itself), the request's meaning (`api_paths`), the
contract with the rules (`policy_api`), and switching the host over (`switch`).

ds01d's policy (`ds01_policy`): creates admitted and allocated by ds01d and rewritten,
other users' containers and volumes out of reach, the host-access rules; what it reads of
ds01d's config and key (`policy_settings`), its questions to ds01d (`daemon_client`) and
to the engine, one JSON request each (`unix_http`).  The rules themselves are pure, in
`ds01d.rules` (`door`, `create_rewrite`, `engine_json`, `host_access`, `admission_mark`).

May import: `ds01d.host`, `ds01d.rules`, `ds01d.config`.  Never the daemon (it talks to
ds01d over its socket) or the CLI.
"""
