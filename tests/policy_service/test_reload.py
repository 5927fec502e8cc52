"""Hot reload on a live server: no request in flight fails, a broken artifact keeps its last good version."""

from __future__ import annotations

import threading
import time
from collections import Counter

from .conftest import LiveServer
from .support import decide_body, export_tiny


def test_reload_under_load_fails_no_request(live_server: LiveServer) -> None:
    stop = threading.Event()
    statuses: Counter[int] = Counter()
    versions: Counter[str] = Counter()
    errors: list[str] = []
    lock = threading.Lock()

    def hammer(policy: str) -> None:
        with live_server.client() as c:
            body = decide_body(policy)
            while not stop.is_set():
                try:
                    r = c.post("/v1/decide", json=body)
                except Exception as exc:  # a dropped connection is a failure too
                    with lock:
                        errors.append(repr(exc))
                    continue
                with lock:
                    statuses[r.status_code] += 1
                    if r.status_code == 200:
                        versions[r.json()["policy_version"]] += 1
                    else:
                        errors.append(r.text)

    threads = [threading.Thread(target=hammer, args=(p,)) for p in ("tiny", "tiny", "default")]
    for t in threads:
        t.start()
    reloads = 0
    try:
        with live_server.client("admin", timeout_s=60) as admin:
            for i in range(8):
                export_tiny(live_server.policy_dir, version=f"r{i}", seed=i)  # a new version on disk...
                r = admin.post("/v1/policies/reload", params={"force": i % 2 == 0})  # ...swapped in
                assert r.status_code == 200, r.text
                assert r.json()["learned"]["tiny"] == f"r{i}" and not r.json()["errors"]
                reloads += 1
                time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert reloads == 8
    assert not errors, errors[:3]
    assert statuses[200] > 0 and set(statuses) == {200}
    assert len([v for v in versions if v.startswith("r")]) >= 2, versions  # the swaps were observed


def test_broken_artifact_keeps_last_good_version_until_removed(live_server: LiveServer) -> None:
    manifest = export_tiny(live_server.policy_dir, name="tiny2", version="good")
    weights = manifest.with_suffix(".safetensors")
    with live_server.client("admin") as c:
        assert c.post("/v1/policies/reload").json()["learned"]["tiny2"] == "good"
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF  # flip a bit in the weights: the manifest's hash no longer matches
        weights.write_bytes(bytes(data))
        report = c.post("/v1/policies/reload").json()
        err = report["errors"][str(manifest)]
        assert "sha256" in err and "still serving tiny2 version good" in err
        r = c.post("/v1/decide", json=decide_body("tiny2"))
        assert r.status_code == 200 and r.json()["policy_version"] == "good"
        listed = c.get("/v1/policies").json()
        assert str(manifest) in listed["errors"]
        manifest.unlink()
        weights.unlink()
        report = c.post("/v1/policies/reload").json()
        assert "tiny2" not in report["learned"] and not report["errors"]
        assert c.post("/v1/decide", json=decide_body("tiny2")).status_code == 404
