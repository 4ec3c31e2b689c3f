"""The fault tests of issue 16: one line per fault at the end of the run.

Each test is marked ``@pytest.mark.chaos("<fault>")``; a fault is *held* when every test
marked with it passed.  A failing test's assertion message says what was lost (the tests
phrase them ``lost: …``), and that is what the line shows.  ``make chaos`` runs these
tests on their own; the normal suite runs them too.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest


@dataclass
class _Fault:
    passed: int = 0
    lost: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


_FAULTS: dict[str, _Fault] = {}


def _fault_of(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("chaos")
    return str(marker.args[0]) if marker is not None and marker.args else None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    report: pytest.TestReport = yield
    fault = _fault_of(item)
    if fault is None:
        return report
    entry = _FAULTS.setdefault(fault, _Fault())
    if report.failed:
        crash = getattr(report.longrepr, "reprcrash", None)
        message = crash.message if crash is not None else str(report.longrepr)
        first = message.splitlines()[0] if message else "failed"
        entry.lost.append(f"{item.name}: {first.removeprefix('AssertionError: ')[:200]}")
    elif report.skipped:
        entry.skipped.append(item.name)
    elif report.when == "call":
        entry.passed += 1
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _FAULTS:
        return
    terminalreporter.section("faults (issue 16)")
    for fault in sorted(_FAULTS, key=lambda name: (len(name.split()[0]), name)):
        entry = _FAULTS[fault]
        if entry.lost:
            line = f"{fault}: NOT HELD — {'; '.join(entry.lost)}"
        elif entry.passed == 0:
            line = f"{fault}: not run ({', '.join(entry.skipped) or 'no test'})"
        else:
            line = f"{fault}: held — nothing lost ({entry.passed} test(s))"
        terminalreporter.write_line(line)


@pytest.fixture
def private_redis() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of this test alone on a free port: it may be stopped and killed
    (the machine's shared Redis never is)."""
    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server")
    from tests.redis_server import redis_server_process

    with redis_server_process() as (url, proc):
        try:
            yield url + "/0", proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)  # a stopped one cannot terminate
