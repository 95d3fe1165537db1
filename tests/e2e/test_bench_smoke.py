"""bench/run.py works end to end: `--quick` with its pure-Python load generator and upstream
(so it runs on any machine, wrk and nginx or not) produces a well-formed result file.
This checks the benchmark's machinery, not speed: the ratios are whatever they are."""

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from harness import ROOT

BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))

import run as bench  # noqa: E402  (bench/run.py)

MEASURED_KEYS = {"requests", "duration_s", "errors", "latency_ms", "requests_per_s", "proxy_cpu_s", "cpu_share", "requests_per_cpu_s"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("bench") / "result.json"
    done = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--quick", "--load-generator", "python", "--upstream-server", "python",
         "--output", str(output)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(output.read_text()), done.stdout


def test_result_file_names_date_machine_versions_and_settings(quick_run):
    report, _ = quick_run
    assert report["machine"]["nproc"] == os.cpu_count()
    assert report["machine"]["cpu"]
    assert report["versions"]["mitmproxy"] == metadata.version("mitmproxy")
    settings = report["settings"]
    assert (settings["duration_s"], settings["rounds"], settings["warmup_s"]) == (1.0, 2, 0.0)
    assert settings["load_generator"] == "bench/loadgen.py"
    assert settings["fast_upstream"] == "bench/upstream.py"
    assert any("bench/loadgen.py" in note for note in settings["notes"])


def test_every_configuration_is_measured_alone_alternating_and_paired(quick_run):
    report, _ = quick_run
    configurations = report["configurations"]
    assert [c["name"] for c in configurations] == [c.name for c in bench.CONFIGURATIONS]
    for c in configurations:
        assert c["status"] in ("pass", "fail"), c
        first, second = c["rounds"]
        assert first["order"] == ["reference", "candidate"] and second["order"] == ["candidate", "reference"]
        for r in c["rounds"]:
            for role in ("reference", "candidate"):
                assert MEASURED_KEYS <= set(r[role]), r[role]
                assert r[role]["requests"] > 0 and not any(r[role]["errors"].values()), (c["name"], r[role])
                assert MEASURED_KEYS <= set(r["paired"][role]), r["paired"][role]
                assert r["paired"][role]["requests"] > 0 and not any(r["paired"][role]["errors"].values()), (c["name"], r["paired"])
            assert r["ratio"] == pytest.approx(r["candidate"]["requests_per_s"] / r["reference"]["requests_per_s"], abs=1e-3)
            paired = r["paired"]
            assert r["paired_ratio"] == pytest.approx(paired["candidate"]["requests_per_s"] / paired["reference"]["requests_per_s"], abs=1e-3)
        for kind in ("ratio", "paired_ratio"):
            ratios = sorted(r[kind] for r in c["rounds"])
            assert c["summary"][kind] == {"median": pytest.approx(sum(ratios) / 2, abs=1e-3), "min": ratios[0], "max": ratios[1]}
        assert c["status"] == ("pass" if c["summary"]["paired_ratio"]["median"] >= c["target"] else "fail")


def test_slow_upstream_is_slow_through_both_proxies(quick_run):
    report, _ = quick_run
    slow = next(c for c in report["configurations"] if c["name"] == "slow-upstream")
    assert slow["connections"] == 100
    for role in ("reference", "candidate"):
        assert slow["summary"][role]["p50_ms"] >= bench.SLOW_DELAY * 1000


def test_prints_a_markdown_table_with_a_row_per_configuration(quick_run):
    report, stdout = quick_run
    assert report["date"] in stdout
    assert "| configuration | clients | reference |" in stdout
    for c in report["configurations"]:
        assert f"| {c['name']} | {c['connections']} | {c['reference']} |" in stdout


def test_a_configuration_whose_stages_do_not_exist_is_reported_not_run(tmp_path):
    config = bench.Configuration(
        "teleport", "a feature nobody built", upstream="fast", connections=1, target=0.9,
        reference=bench.BareMitmdump(), candidate=bench.Ambassador(bench.CACHED), needs=frozenset({"teleport", "cache"}),
    )
    entry = bench.run_configuration(config, tools=None, settings=None, tmp=tmp_path, body_file=tmp_path / "unused")
    assert entry["status"] == "not yet"
    assert entry["detail"] == "the ambassador has no teleport stage yet"
    assert "rounds" not in entry
