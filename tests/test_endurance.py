"""Load and soak: many scrapers during flaky polls, and thousands of poll cycles.

These are correctness and leak checks, not speed checks: the assertions are on failed
scrapes, wrong values and resources that keep growing, never on time taken.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import SECRET_KEY
from tests.processes import Exporter, parse_metrics, start_exporter
from tests.simulator import Simulator, start_simulator

pytestmark = pytest.mark.slow

SCRAPERS = 50
LOAD_SECONDS = 30.0


def test_fifty_scrapers_during_flaky_polls(simulator: tuple[Simulator, str], history: dict) -> None:
    sim, url = simulator
    process = start_exporter(url, key=SECRET_KEY)
    stop = threading.Event()
    failures: list[str] = []
    wrong: list[str] = []
    scrapes = [0] * SCRAPERS
    seen_down = threading.Event()

    def scrape(index: int) -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                try:
                    response = client.get(f"{process.url}/metrics")
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                if response.status_code != 200:
                    failures.append(f"HTTP {response.status_code}")
                    continue
                samples = parse_metrics(response.text)
                scrapes[index] += 1
                app = frozenset({"app": "default"}.items())
                if samples.get(("connectycube_up", app)) == 0:
                    seen_down.set()
                total = samples.get(("connectycube_messages_sent", app))
                today = samples.get(("connectycube_messages_sent_today", app))
                if total not in (None, 9) or today not in (None, 4):
                    wrong.append(f"messages_sent={total} today={today}")

    try:
        process.wait_for_value("connectycube_up", 1, app="default")
        threads = [threading.Thread(target=scrape, args=(i,)) for i in range(SCRAPERS)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + LOAD_SECONDS
        faults = [{"status": 500}, {"body": "garbage"}, {"status": 503}, {"latency": 1.5}]
        while time.monotonic() < deadline:
            sim.set_faults(**random.choice(faults))
            time.sleep(0.6)
            sim.set_faults()
            time.sleep(0.6)
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
        process.wait_for_value("connectycube_up", 1, app="default")
    finally:
        stop.set()
        sim.set_faults()
        code = process.stop()
    total_scrapes = sum(scrapes)
    print(f"\nload: {SCRAPERS} scrapers, {total_scrapes} scrapes in {LOAD_SECONDS:.0f}s")
    assert failures == []
    assert wrong == []
    assert seen_down.is_set()  # the faults really reached the exporter
    assert all(count > 0 for count in scrapes)
    assert code == 0


def resources(process: Exporter) -> tuple[int, int, int, int]:
    """Resident memory (KiB), sockets, other file descriptors and threads of the exporter."""
    proc = Path(f"/proc/{process.process.pid}")
    status = (proc / "status").read_text()
    rss = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
    links = []
    for fd in (proc / "fd").iterdir():
        try:
            links.append(str(fd.readlink()))
        except FileNotFoundError:  # closed while we looked
            continue
    sockets = sum(link.startswith("socket:") for link in links)
    return rss, sockets, len(links) - sockets, len(list((proc / "task").iterdir()))


def test_soak_thousands_of_polls_with_random_faults(tmp_path: Path) -> None:
    sim = Simulator(key_prefix="sk-soak-", history_days=30)
    server = start_simulator(sim)
    config = tmp_path / "apps.yml"
    apps = "".join(
        f"  - name: app{i}\n    api_key: sk-soak-{i}\n    dialog_types: [2]\n" for i in range(3)
    )
    config.write_text("apps:\n" + apps)
    cap = 8
    process = start_exporter(
        server.url,
        "--config-file",
        str(config),
        # 6 requests a poll (a per-day answer and its total, for two kinds) within 90 ms.
        "--poll-interval-seconds",
        "0.1",
        "--request-timeout-seconds",
        "0.2",
        "--max-retries",
        "1",
        "--max-concurrent-requests",
        str(cap),
    )
    stop = threading.Event()

    def flaky() -> None:
        faults = [
            {"status": 500},
            {"body": "reset"},
            {"body": "truncated"},
            {"status": 429, "retry_after": "0"},
        ]
        while not stop.is_set():
            sim.set_faults(**random.choice(faults), count=random.randint(1, 20))
            stop.wait(random.uniform(0.1, 1.0))

    chaos = threading.Thread(target=flaky)
    samples: list[tuple[int, int, int, int]] = []
    try:
        for i in range(3):
            process.wait_for_value("connectycube_up", 1, timeout=20, app=f"app{i}")
        chaos.start()
        time.sleep(5)  # warm-up: allocator arenas, connection pool, caches
        polls_warm = polls(process)
        for _ in range(30):
            samples.append(resources(process))
            time.sleep(1)
        polls_end = polls(process)
    finally:
        stop.set()
        if chaos.is_alive():  # not when the start-up wait failed
            chaos.join(timeout=5)
        sim.set_faults()
        process.stop()
        server.stop()
    cycles = polls_end - polls_warm
    rss = [sample[0] for sample in samples]
    first, last = samples[:10], samples[-10:]
    print(
        f"\nsoak: {cycles:.0f} poll cycles in 30 s after a 5 s warm-up, "
        f"{polls_end:.0f} in all; RSS KiB min/max {min(rss)}/{max(rss)}, first 10 s mean "
        f"{sum(s[0] for s in first) / 10:.0f}, last 10 s mean {sum(s[0] for s in last) / 10:.0f}; "
        f"sockets max {max(s[1] for s in samples)} (cap {cap}); other fds "
        f"{sorted({s[2] for s in samples})}; threads {sorted({s[3] for s in samples})}"
    )
    assert cycles >= 800  # of 900 scheduled: 3 apps, every 0.1 s, for 30 s
    # A leak grows steadily; allocator noise does not.
    assert sum(s[0] for s in last) / 10 - sum(s[0] for s in first) / 10 < 4 * 1024
    # Connections stay within the cap, plus the listening socket, the wake-up socket pairs
    # of the two event loops (polling, HTTP) and our scrape.
    assert max(s[1] for s in samples) <= cap + 6
    assert len({s[2] for s in samples}) == 1  # no file is ever left open
    assert len({s[3] for s in samples}) == 1  # no thread is ever left behind


def polls(process: Exporter) -> float:
    metrics = process.metrics()
    return sum(value for (name, _), value in metrics.items() if name == "connectycube_polls_total")
