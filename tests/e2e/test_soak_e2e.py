"""Bounded soak and reload-under-load runs through the real ambassador."""

import http.client
import threading
from collections import Counter

from harness import Ambassador, FakeUpstream, Reply
from profiles import Profile, profile, upstream

WORKERS = 8


def hammer(port: int, paths, stop: threading.Event | None = None) -> Counter:
    """Send GETs over keep-alive connections from WORKERS threads; count statuses."""
    statuses: Counter = Counter()
    lock = threading.Lock()
    chunks = [paths[i::WORKERS] for i in range(WORKERS)] if stop is None else [paths] * WORKERS

    def work(chunk):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        local: Counter = Counter()
        i = 0
        while (stop is None and i < len(chunk)) or (stop is not None and not stop.is_set()):
            conn.request("GET", chunk[i % len(chunk)])
            resp = conn.getresponse()
            resp.read()
            local[resp.status] += 1
            i += 1
        conn.close()
        with lock:
            statuses.update(local)

    threads = [threading.Thread(target=work, args=(chunk,)) for chunk in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_memory_stays_flat_over_many_requests(tmp_path):
    with FakeUpstream(lambda req: Reply.json({"path": req.path})) as up:
        with Ambassador(tmp_path, profile(upstream("app", up.url, path_prefix="/app")), "-q") as amb:
            paths = [f"/app/item/{i % 500}?v={i}" for i in range(8_000)]  # distinct and repeated keys
            assert hammer(amb.port, paths[:1_500]) == Counter({200: 1_500})
            early = rss_kib(amb.proc.pid)
            assert hammer(amb.port, paths[1_500:]) == Counter({200: 6_500})
            late = rss_kib(amb.proc.pid)
            assert late < early * 1.10, f"RSS grew from {early} KiB to {late} KiB"


def test_profile_reload_under_load_loses_no_request(tmp_path):
    with FakeUpstream(lambda req: Reply.json({"ok": True})) as up:
        def live(timeout: int) -> Profile:
            return profile(upstream("app", up.url, path_prefix="/app", timeout=f"{timeout}s"))

        path = live(10).write(tmp_path / "live.yaml")
        with Ambassador(tmp_path, path, "--set", "flow_detail=0") as amb:
            stop = threading.Event()
            result: list[Counter] = []
            load = threading.Thread(target=lambda: result.append(hammer(amb.port, ["/app/x", "/app/y"], stop)))
            load.start()
            for n in range(4):
                mark = len(amb.lines)
                live(11 + n).write(path)  # a changed upstream: a new service
                amb.wait_for_log(r"profile .* loaded", timeout=10, start=mark)
            stop.set()
            load.join(30)
            statuses = result[0]
            assert set(statuses) == {200} and statuses[200] > 100, statuses
