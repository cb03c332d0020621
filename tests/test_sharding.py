"""Sharding: three exporters over one 30-app config export every app exactly once."""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.processes import Exporter, run_exporter_once, wait_until
from tests.simulator import Simulator

pytestmark = pytest.mark.slow

APPS = 30
SHARDS = 3


def app_name(index: int) -> str:
    return f"client-{index:02d}"


def write_config(path: Path, url: str, order: list[int]) -> Path:
    lines = ["apps:"]
    for index in order:
        lines += [f"  - name: {app_name(index)}", f"    api_key: key-{index:02d}"]
        lines += [f"    api_url: {url}", "    dialog_types: [2]"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def exported_apps(exporter: Exporter) -> dict[str, float]:
    """Each app's all-time message count, as one exporter serves it."""
    return {
        dict(labels)["app"]: value
        for (name, labels), value in exporter.metrics().items()
        if name == "connectycube_messages_sent"
    }


def start_shards(config: Path, *flags: str) -> list[Exporter]:
    shards: list[Exporter] = []
    for shard in range(SHARDS):
        env = {"CONNECTYCUBE_CONFIG_FILE": str(config), "CONNECTYCUBE_TOTAL_SHARDS": str(SHARDS)}
        shards.append(Exporter(["--shard", str(shard), *flags], env=env))
    return shards


def polled(shards: list[Exporter]) -> list[dict[str, float]]:
    def every_app_seen() -> list[dict[str, float]] | None:
        seen = [exported_apps(shard) for shard in shards]
        return seen if sum(map(len, seen)) >= APPS else None

    return wait_until(every_app_seen, 30, "all apps polled by the shards")


def test_three_shards_export_every_app_exactly_once(
    served: Callable[[Simulator], str], tmp_path: Path
) -> None:
    keys = [f"key-{index:02d}" for index in range(APPS)]
    sim = Simulator(api_keys=keys, random_history=False)
    long_ago = time.time() - 10 * 86400
    for index, key in enumerate(keys):
        sim.add_events(key, "messages", [long_ago] * (index + 1))  # each app its own count
    url = served(sim)
    config = write_config(tmp_path / "apps.yml", url, list(range(APPS)))

    shards = start_shards(config, "--poll-interval-seconds", "0.5")
    try:
        seen = polled(shards)
        time.sleep(1)  # a few more polls: no shard picks up another's app later
        seen = [exported_apps(shard) for shard in shards]
    finally:
        for shard in shards:
            shard.stop()

    everything = {app: value for share in seen for app, value in share.items()}
    assert sum(map(len, seen)) == APPS  # none doubled
    assert everything == {app_name(index): index + 1 for index in range(APPS)}  # none missing
    assert all(seen), "a stable hash of 30 names leaves no shard idle"
    for shard, share in zip(shards, seen, strict=True):
        assert f"polling {len(share)} of {APPS} app(s)" in shard.logs

    # The share is chosen by the app's name, not by its place in the file.
    reordered = write_config(tmp_path / "reordered.yml", url, list(reversed(range(APPS))))
    again = start_shards(reordered)
    try:
        assert [set(share) for share in polled(again)] == [set(share) for share in seen]
    finally:
        for shard in again:
            shard.stop()


@pytest.mark.parametrize(
    ("shard", "total", "words"),
    [
        ("3", "3", "CONNECTYCUBE_SHARD"),
        ("-1", "3", "CONNECTYCUBE_SHARD"),
        ("exporter-2", "3", "CONNECTYCUBE_SHARD"),
        # A StatefulSet pod without the pod-index label gives an empty value: never shard 0.
        ("", "3", "CONNECTYCUBE_SHARD"),
        ("0", "0", "CONNECTYCUBE_TOTAL_SHARDS"),
    ],
)
def test_a_shard_outside_the_total_is_a_configuration_error(
    shard: str, total: str, words: str
) -> None:
    env = {
        "CONNECTYCUBE_API_KEY": "key-00",
        "CONNECTYCUBE_SHARD": shard,
        "CONNECTYCUBE_TOTAL_SHARDS": total,
    }
    result = run_exporter_once([], env=env)
    assert result.returncode == 2
    assert words in result.stderr
    assert "Traceback" not in result.stderr


def test_a_shard_that_owns_no_app_is_ready(
    served: Callable[[Simulator], str], tmp_path: Path
) -> None:
    # Two apps that both hash (CRC-32 of the name, as documented) to shard 1 of 3.
    indexes = [i for i in range(100) if zlib.crc32(app_name(i).encode()) % SHARDS == 1][:2]
    keys = [f"key-{index:02d}" for index in indexes]
    url = served(Simulator(api_keys=keys, random_history=False))
    shards = start_shards(write_config(tmp_path / "apps.yml", url, indexes))
    try:
        for shard in shards:
            wait_until(lambda s=shard: s.get("/-/ready").status_code == 200, 20, "ready")
        for idle in (shards[0], shards[2]):
            assert "polling 0 of 2 app(s)" in idle.logs
            assert "polling no app: ready" in idle.logs
            assert exported_apps(idle) == {}
        assert set(exported_apps(shards[1])) == {app_name(index) for index in indexes}
    finally:
        for shard in shards:
            shard.stop()
