"""The gateway reads a request target the way dockerd 20.10 routes it.

Each row's dockerd behaviour was observed by sending the raw request to Debian's
docker.io 20.10.24 in the test box (tests/test_gateway_box.py checks the refusals and
a few passes against the engine again): the router matches the percent-decoded path,
with and without a `/v<version>` prefix whose parts it compares as numbers, and answers
301 to any path that is not clean.
"""

from __future__ import annotations

import pytest

from ds01d.gateway.api_paths import BadTarget, Target, clean_path, parse_target

ROUTED = [
    # target as sent                         path dockerd routes            query         version
    ("/v1.41/containers/create?name=x",      "/containers/create",          "name=x",     "1.41"),
    ("/v1.24/containers/json",               "/containers/json",            "",           "1.24"),
    ("/v1.12/containers/json",               "/containers/json",            "",           "1.12"),  # dockerd's minimum
    ("/v1.11/containers/json",               "/containers/json",            "",           "1.11"),  # dockerd: 400 too old
    ("/containers/create",                   "/containers/create",          "",           None),    # no prefix: current
    ("/containers%2Fcreate",                 "/containers/create",          "",           None),    # %2F is a / to mux
    ("/v1.41/containers%2Fcreate",           "/containers/create",          "",           "1.41"),
    ("/%761.41/containers/create",           "/containers/create",          "",           "1.41"),  # %76 is the v
    ("/containers/cre%61te",                 "/containers/create",          "",           None),
    ("/v1.041/containers/create",            "/containers/create",          "",           "1.41"),  # parts compare as numbers
    ("/images/reg.io%2Fa%2Fb:1/json",        "/images/reg.io/a/b:1/json",   "",           None),
    ("/containers/json?all=1&filters=%7B%7D", "/containers/json",           "all=1&filters=%7B%7D", None),
    ("/containers/json?a=1?b=2",             "/containers/json",            "a=1?b=2",    None),    # first ? splits
    ("/containers/json/",                    "/containers/json/",           "",           None),    # dockerd: 404
    ("/V1.41/containers/create",             "/V1.41/containers/create",    "",           None),    # dockerd: 404
    ("/v1.41",                               "/v1.41",                      "",           None),    # dockerd: 404
    ("/v1.41/",                              "/",                           "",           "1.41"),
    ("/v1.41/v1.40/containers/create",       "/v1.40/containers/create",    "",           "1.41"),  # dockerd: 404
    ("/containers/json;x",                   "/containers/json;x",          "",           None),    # dockerd: 404
    ("/",                                    "/",                           "",           None),
]

REFUSED = [
    ("//containers/create", "canonical"),           # dockerd: 301 to /containers/create
    ("/v1.41//containers/create", "canonical"),     # dockerd: 301
    ("/containers/./create", "canonical"),          # dockerd: 301
    ("/containers/x/../create", "canonical"),       # dockerd: 301 to /containers/create
    ("/containers/x%2F..%2F..%2Fcreate", "canonical"),  # decoded first, then not clean
    ("/v1.41.0/containers/create", "API version"),  # dockerd: accepted as 1.41.0 = 1.41
    ("/v1..41/containers/create", "API version"),   # dockerd: 400 too old
    ("/v./containers/create", "API version"),       # dockerd: 400 too old
    ("/v1/containers/create", "API version"),       # dockerd: 400 too old
    ("/containers/%zz/json", "percent escape"),     # dockerd (Go): 400
    ("/containers/json%", "percent escape"),
    ("/containers/json%2", "percent escape"),
    ("/containers/json%00", "control character"),   # dockerd: 404
    ("/containers/%0a/json", "control character"),
    ("/containers/%ff/json", "UTF-8"),
    ("http://docker/v1.41/containers/create", "not a path"),  # dockerd: routes absolute-form; no client sends it
    ("*", "not a path"),
]


@pytest.mark.parametrize("target,path,query,version", ROUTED, ids=[r[0] for r in ROUTED])
def test_routed_like_dockerd(target: str, path: str, query: str, version: str | None) -> None:
    assert parse_target(target) == Target(path, query, version)


@pytest.mark.parametrize("target,why", REFUSED, ids=[r[0] for r in REFUSED])
def test_ambiguous_targets_are_refused(target: str, why: str) -> None:
    with pytest.raises(BadTarget, match=why):
        parse_target(target)


@pytest.mark.parametrize("path,clean", [
    ("/", "/"), ("//", "/"), ("/a//b", "/a/b"), ("/a/./b", "/a/b"), ("/a/b/..", "/a"), ("/..", "/"),
    ("/../a", "/a"), ("/a/b/", "/a/b/"), ("/a/b/./", "/a/b/"), ("/a/../", "/"), ("/a/..b", "/a/..b"),
])
def test_clean_path_is_gos(path: str, clean: str) -> None:
    """Go's path.Clean with mux's trailing-slash rule (mux redirects unless they agree)."""
    assert clean_path(path) == clean
