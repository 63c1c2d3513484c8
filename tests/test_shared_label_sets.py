"""Gateway processes sharing one real redis-server see the same label sets, and survive it going away."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import numpy as np

from harness.gateway import free_port, running_gateway
from harness.images import LABELS
from tests.redis_server import running_redis
from tests.samples import Reference, as_matrix, images

BLOBS = images(2)
BY_SET = {"images": [base64.b64encode(b).decode() for b in BLOBS], "label_set": "shapes"}


def put(url: str, labels: list[str]) -> int:
    return httpx.put(f"{url}/v1/label-sets/shapes", json={"labels": labels}, timeout=60).status_code


def test_label_sets_created_on_one_replica_are_used_and_deleted_on_another(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        running_redis(tmp_path) as url,
        running_gateway(tmp_path / "a", LIT_LABEL_STORE=url) as a,
        running_gateway(tmp_path / "b", LIT_LABEL_STORE=url) as b,
    ):
        assert put(a, LABELS) == 200
        assert httpx.get(f"{b}/v1/label-sets/shapes").json()["labels"] == LABELS
        assert [s["name"] for s in httpx.get(f"{b}/v1/label-sets").json()] == ["shapes"]
        used = httpx.post(f"{b}/v1/classify", json=BY_SET, timeout=60)
        assert used.status_code == 200, used.text
        expected = Reference().scores(BLOBS, LABELS, None)
        assert np.abs(as_matrix(used.json(), LABELS) - expected).max() <= 1e-5

        # Replaced on B: A's next request uses the new labels, not a cached matrix of the old ones.
        assert httpx.post(f"{a}/v1/classify", json=BY_SET, timeout=60).status_code == 200
        assert put(b, LABELS[:3]) == 200
        again = httpx.post(f"{a}/v1/classify", json=BY_SET, timeout=60).json()
        assert {p["label"] for p in again["results"][0]["predictions"]} == set(LABELS[:3])

        assert httpx.delete(f"{b}/v1/label-sets/shapes").status_code == 204
        assert httpx.get(f"{a}/v1/label-sets/shapes").status_code == 404
        gone = httpx.post(f"{a}/v1/classify", json=BY_SET, timeout=60)
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "unknown_label_set"


def test_redis_going_away_gives_503_and_the_gateway_stays_up(tmp_path: Path) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with running_gateway(tmp_path, LIT_LABEL_STORE=url) as gateway:  # starts while Redis is down
        with running_redis(tmp_path, port):
            assert put(gateway, LABELS) == 200
            assert httpx.post(f"{gateway}/v1/classify", json=BY_SET, timeout=60).status_code == 200
        down = httpx.post(f"{gateway}/v1/classify", json=BY_SET, timeout=60)
        assert down.status_code == 503 and down.json()["error"]["code"] == "label_store_unavailable"
        assert "check that Redis is running" in down.json()["error"]["message"]
        assert httpx.get(f"{gateway}/v1/label-sets").status_code == 503
        plain = {"images": BY_SET["images"], "labels": LABELS}  # requests without a set still work
        assert httpx.post(f"{gateway}/v1/classify", json=plain, timeout=60).status_code == 200
        assert httpx.get(f"{gateway}/healthz").status_code == 200
        with running_redis(tmp_path, port):  # back (empty: no persistence here), no gateway restart
            assert httpx.get(f"{gateway}/v1/label-sets").json() == []
            assert put(gateway, LABELS) == 200
