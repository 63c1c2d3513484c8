"""API keys on real gateway processes: every /v1 and /v2 route (but the protocol's health probes) refuses a
missing or wrong key with 401 ``unauthorized``, both header forms work with a right key, health and metrics
stay open, keys are compared in constant time, and no key ever reaches the logs (plain or JSON).

The routes are read from the running gateway's OpenAPI document, so a new route is covered the day it is
added; paths under /v1 and /v2 that no route serves must be refused as well (the check runs before routing).
Under /v2 the 401 comes in the Open Inference Protocol's error shape, ``{"error": "<message>"}``.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from starlette.requests import Request

import service.guards
from harness.gateway import REPOSITORY, free_port, running_gateway, stop_process
from service.errors import ApiError

# Distinctive strings, so that finding one in a log cannot be a coincidence.
KEY = "lit-key-7Qf3x9ZmB2pLw8RtK4vN"
SECOND_KEY = "second.key_Hs82Jd0qPz/+="
KEYS = [KEY, SECOND_KEY]

WRONG = {
    "prefix": KEY[:-1],
    "extended": KEY + "0",
    "upper_case": KEY.upper(),
    "swapped_case": KEY.swapcase(),
    "last_char_changed": KEY[:-1] + ("A" if KEY[-1] != "A" else "B"),
    "first_char_changed": ("M" if KEY[0] != "M" else "N") + KEY[1:],
    "both_keys_joined": KEY + SECOND_KEY,
    "unrelated": "wrong-key-c41d9e0b2a7f",
}
# Header sets that must all be refused.
REFUSED: dict[str, dict[str, str]] = {
    "no_key": {},
    "empty_x_api_key": {"X-API-Key": ""},
    "bearer_word_only": {"Authorization": "Bearer"},
    "no_scheme": {"Authorization": KEY},
    "basic_scheme": {"Authorization": f"Basic {KEY}"},
    "token_scheme": {"Authorization": f"Token {KEY}"},
    "bearer_inside_x_api_key": {"X-API-Key": f"Bearer {KEY}"},
    "bearer_with_trailing_words": {"Authorization": f"Bearer {KEY} extra"},
    # A Bearer header, when sent, is the credential: a wrong one is not rescued by a right X-API-Key.
    "wrong_bearer_right_x_api_key": {"Authorization": f"Bearer {WRONG['unrelated']}", "X-API-Key": KEY},
    **{f"bearer_{name}": {"Authorization": f"Bearer {value}"} for name, value in WRONG.items()},
    **{f"x_api_key_{name}": {"X-API-Key": value} for name, value in WRONG.items()},
}
ACCEPTED: dict[str, dict[str, str]] = {
    "bearer": {"Authorization": f"Bearer {KEY}"},
    "bearer_lower_case_scheme": {"authorization": f"bearer {KEY}"},
    "x_api_key": {"X-API-Key": KEY},
    "x_api_key_lower_case_name": {"x-api-key": KEY},
    "second_key_bearer": {"Authorization": f"Bearer {SECOND_KEY}"},
    "second_key_x_api_key": {"X-API-Key": SECOND_KEY},
}
SECRETS = [*KEYS, *WRONG.values()]
OPEN_PATHS = ["/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"]


@pytest.fixture(scope="module", params=["json", "plain"])
def keyed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SimpleNamespace]:
    """A gateway with two API keys, logging in ``request.param`` format; ``log`` reads what it wrote."""
    workdir = tmp_path_factory.mktemp(f"keys-{request.param}")
    env = {"LIT_API_KEYS": json.dumps(KEYS), "LIT_LOG_FORMAT": request.param}
    with running_gateway(workdir, **env) as url, httpx.Client(base_url=url, timeout=60) as client:
        log_file = next(workdir.glob("gateway-*.log"))
        yield SimpleNamespace(client=client, url=url, log_format=request.param, log=log_file.read_text)


def needs_a_key(path: str) -> bool:
    return path.startswith("/v1/") or path == "/v2" or (path.startswith("/v2/") and "/health/" not in path)


def api_operations(client: httpx.Client) -> list[tuple[str, str]]:
    """Every (method, path) under /v1 and /v2 (but the health probes) in the gateway's OpenAPI, path
    parameters filled in."""
    spec = client.get("/openapi.json").json()
    fill = {"{name}": "pets", "{model}": "lit_demo", "{version}": "1"}
    operations = []
    for path, methods in spec["paths"].items():
        for placeholder, value in fill.items():
            path = path.replace(placeholder, value)
        operations += [(method.upper(), path) for method in methods if needs_a_key(path)]
    assert all("{" not in path for _, path in operations), f"fill in the new path parameter: {operations}"
    return operations


def call(client: httpx.Client, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    body = {"json": {}} if method in {"POST", "PUT", "PATCH"} else {}
    return client.request(method, path, headers=headers, **body)


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, (response.request.method, response.request.url, response.text)
    body = response.json()
    if response.request.url.path.startswith("/v2"):  # the Open Inference Protocol's shape: a message
        assert set(body) == {"error"} and isinstance(body["error"], str), body
        message = body["error"]
    else:
        assert set(body) == {"error"} and body["error"]["code"] == "unauthorized", body
        message = body["error"]["message"]
    assert "Bearer" in message and "X-API-Key" in message, body
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers.get("x-request-id")
    assert not any(secret in response.text for secret in SECRETS)


def test_the_gateway_documents_every_api_route(keyed: SimpleNamespace) -> None:
    operations = api_operations(keyed.client)
    expected = {
        ("GET", "/v1/models"),
        ("GET", "/v1/models/pets"),
        ("POST", "/v1/classify"),
        ("POST", "/v1/hf/lit_demo/zero-shot-image-classification"),
        ("POST", "/v1/embed/image"),
        ("POST", "/v1/embed/text"),
        ("GET", "/v1/label-sets"),
        ("GET", "/v1/label-sets/pets"),
        ("PUT", "/v1/label-sets/pets"),
        ("DELETE", "/v1/label-sets/pets"),
        ("GET", "/v2"),
        ("GET", "/v2/models/pets"),
        ("GET", "/v2/models/pets/versions/1"),
        ("GET", "/v2/models/pets/ready"),
        ("GET", "/v2/models/pets/versions/1/ready"),
        ("POST", "/v2/models/pets/infer"),
        ("POST", "/v2/models/pets/versions/1/infer"),
    }
    assert expected <= set(operations), operations  # and any route added later is in ``operations`` too


@pytest.mark.parametrize("case", list(REFUSED))
def test_missing_and_wrong_keys_are_401_on_every_api_route(keyed: SimpleNamespace, case: str) -> None:
    headers = REFUSED[case]
    targets = [
        *api_operations(keyed.client),
        ("GET", "/v1/no-such-route"),  # refused before routing: no hint of which routes exist
        ("GET", "/v1"),
        ("GET", "/v1/models?api_key=" + KEY),  # a key in the query string is no key
        ("GET", "/v2/no-such-route"),
        ("GET", "/v2/models/lit_demo/stats"),  # a Triton route this gateway does not serve
    ]
    for method, path in targets:
        assert_unauthorized(call(keyed.client, method, path, headers))
    # A malformed body without a key is still 401, not 422: the key is checked before the body is read.
    raw = keyed.client.post(
        "/v1/classify", content=b"{oops", headers={**headers, "content-type": "application/json"}
    )
    assert_unauthorized(raw)
    raw = keyed.client.post("/v2/models/lit_demo/infer", content=b"{oops", headers=headers)
    assert_unauthorized(raw)


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_right_keys_pass_on_every_api_route(keyed: SimpleNamespace, case: str) -> None:
    headers = ACCEPTED[case]
    for method, path in api_operations(keyed.client):
        response = call(keyed.client, method, path, headers)
        assert response.status_code != 401, (method, path, response.text)
        assert response.status_code < 500, (method, path, response.text)
    assert keyed.client.get("/v1/models", headers=headers).json()["name"] == "lit_demo"
    assert keyed.client.get("/v1/label-sets", headers=headers).status_code == 200
    put = keyed.client.put("/v1/label-sets/auth-test", json={"labels": ["cat", "dog"]}, headers=headers)
    assert put.status_code == 200, put.text
    texts = keyed.client.post("/v1/embed/text", json={"texts": ["a cat"]}, headers=headers)
    assert texts.status_code == 200 and len(texts.json()["embeddings"]) == 1
    assert keyed.client.get("/v2/models/lit_demo.embed", headers=headers).json()["versions"] == ["1"]


def test_health_and_metrics_stay_open(keyed: SimpleNamespace) -> None:
    for path in OPEN_PATHS:
        for headers in [{}, REFUSED["x_api_key_unrelated"]]:
            response = keyed.client.get(path, headers=headers)
            assert response.status_code == 200, (path, response.text)
    assert 'status="401"' in keyed.client.get("/metrics").text


def test_no_key_ever_reaches_the_logs(keyed: SimpleNamespace) -> None:
    """Runs after the tests above (same gateway): right and wrong keys, 401s, 4xx errors."""
    client = keyed.client
    for headers in [*ACCEPTED.values(), *REFUSED.values()]:
        client.post(
            "/v1/classify", content=b"{broken", headers={**headers, "content-type": "application/json"}
        )
        client.get(f"/v1/label-sets/missing?key={KEY}", headers=headers)  # 404 or 401
        client.get(f"/nothing-here?token={SECOND_KEY}", headers=headers)  # 404, outside /v1
    time.sleep(0.5)  # let the last access lines reach the file
    log = keyed.log()
    lines = [line for line in log.splitlines() if line.strip()]
    if keyed.log_format == "json":
        records = [json.loads(line) for line in lines]
        statuses = {r.get("status") for r in records}
    else:
        statuses = {int(word[7:]) for line in lines for word in line.split() if word.startswith("status=")}
    assert {200, 401, 404, 422} <= statuses, statuses  # the requests were logged ...
    leaked = [secret for secret in SECRETS if secret in log]
    assert not leaked, f"keys in the {keyed.log_format} log: {leaked}"  # ... without their keys


# --- constant time -------------------------------------------------------------------------------------


def function_node(name: str) -> ast.FunctionDef:
    tree = ast.parse(inspect.getsource(service.guards))
    return next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name)


def test_keys_are_compared_with_hmac_compare_digest() -> None:
    check = function_node("check_key")  # what require_api_key and the gRPC transport call
    calls = [ast.unparse(n.func) for n in ast.walk(check) if isinstance(n, ast.Call)]
    assert "hmac.compare_digest" in calls, calls
    # No ordinary comparison touches a key: ==, !=, in, startswith and friends stop at the first difference.
    secret_names = {"given", "candidate", "key", "keys"}
    for node in ast.walk(check):
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            assert not names & secret_names, ast.unparse(node)
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
            assert not isinstance(node.comparators[0], ast.Name) or node.comparators[0].id != "keys"
        if isinstance(node, ast.Attribute) and node.attr in {"startswith", "endswith", "find", "index"}:
            assert not (isinstance(node.value, ast.Name) and node.value.id in secret_names), ast.unparse(node)
    # Every configured key is compared, whatever matched: no early exit from the loop over the keys.
    loops = [n for n in ast.walk(check) if isinstance(n, ast.For) and ast.unparse(n.iter) == "keys"]
    assert loops, "expected one loop over the configured keys"
    for loop in loops:
        assert not [n for n in ast.walk(loop) if isinstance(n, (ast.Break, ast.Return, ast.Raise))]


def fake_request(headers: dict[str, str], keys: list[str], path: str = "/v1/models") -> Request:
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "app": SimpleNamespace(state=SimpleNamespace(settings=SimpleNamespace(api_keys=keys))),
    }
    return Request(scope)


@pytest.mark.parametrize("given", [KEY, SECOND_KEY, "x", KEY * 10, KEY[:-1], ""])
def test_every_key_is_compared_on_equal_length_digests(monkeypatch: pytest.MonkeyPatch, given: str) -> None:
    """Behaviour: compare_digest runs once per configured key, whichever key (if any) matches, and always on
    inputs of one length, so neither which key matched nor the length of the guess shows in the time."""
    seen: list[tuple[bytes, bytes]] = []
    original = service.guards.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return original(a, b)

    monkeypatch.setattr(service.guards.hmac, "compare_digest", spy)
    request = fake_request({"X-API-Key": given}, KEYS)
    if given in KEYS:
        service.guards.require_api_key(request)
    else:
        with pytest.raises(ApiError) as refused:
            service.guards.require_api_key(request)
        assert (refused.value.status, refused.value.code) == (401, "unauthorized")
    if given:
        assert len(seen) == len(KEYS), seen
        assert {len(a) for a, _ in seen} | {len(b) for _, b in seen} == {hashlib.sha256().digest_size}
    else:
        assert not seen  # an empty key is refused without comparing


def test_an_empty_configured_key_opens_nothing() -> None:
    for headers in [{"X-API-Key": ""}, {"Authorization": "Bearer "}, {}]:
        with pytest.raises(ApiError):
            service.guards.require_api_key(fake_request(headers, [""]))


# --- behind a proxy: uvicorn's root_path --------------------------------------------------------------


@pytest.fixture(scope="module")
def prefixed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real uvicorn gateway started with ``root_path="/lit"`` (as behind a proxy that strips /lit).

    uvicorn then puts the prefix into the ASGI path too ("/lit/v1/models"): a check on ``request.url.path``
    starting with /v1/ would wave every request through while the router still serves it.
    """
    workdir = tmp_path_factory.mktemp("prefixed")
    port = free_port()
    env = {
        **os.environ,
        "LIT_REPOSITORY": str(REPOSITORY),
        "LIT_LABEL_STORE": str(workdir / "label_sets"),
        "LIT_INTRA_OP_THREADS": "1",
        "LIT_API_KEYS": json.dumps(KEYS),
    }
    code = (
        "import uvicorn\n"
        "from service.app import create_app\n"
        "from service.settings import Settings\n"
        f"uvicorn.run(create_app(Settings()), host='127.0.0.1', port={port}, root_path='/lit', "
        "log_level='warning')\n"
    )
    root = Path(__file__).resolve().parents[1]
    with open(workdir / "gateway.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=root, stdout=log, stderr=log)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, (workdir / "gateway.log").read_text()[-3000:]
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "gateway not ready within 60 s"
                time.sleep(0.1)
            yield url
        finally:
            stop_process(process)


def test_keys_are_required_behind_a_root_path(prefixed: str) -> None:
    with httpx.Client(base_url=prefixed, timeout=60) as client:
        for path in ["/v1/models", "/v1/label-sets", "/v1/label-sets/pets"]:
            assert_unauthorized(client.get(path))
        assert client.get("/v1/models", headers={"X-API-Key": KEY}).status_code == 200
        assert client.get("/healthz").status_code == 200
