"""conftest.py's rule for CI: under TEXTWEAVER_NO_SKIP=1 every way of skipping a test fails the run,
with the skip's reason; without it a skip stays a skip (a machine without chromium can still run
`make test`)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).parent / "conftest.py"

SKIPPING = """
import pytest

def test_runs():
    pass

def test_calls_skip():
    pytest.skip("no chromium here")

@pytest.mark.skipif(True, reason="no node here")
def test_marked_skipif():
    pass

@pytest.mark.skip(reason="not today")
def test_marked_skip():
    pass

def test_imports_or_skips():
    pytest.importorskip("no_such_module_anywhere")

@pytest.fixture
def needs_a_mount():
    pytest.skip("cannot mount a tmpfs")

def test_skipped_by_its_fixture(needs_a_mount):
    pass

@pytest.mark.xfail(run=False, reason="never run")
def test_xfail_not_run():
    pass

def test_calls_xfail():
    pytest.xfail("gave up")

@pytest.mark.xfail(reason="known to fail", strict=True)
def test_xfail_that_runs_and_fails():
    assert False
"""
SKIPPED = ["test_calls_skip", "test_marked_skipif", "test_marked_skip", "test_imports_or_skips",
           "test_skipped_by_its_fixture", "test_xfail_not_run", "test_calls_xfail"]  # fmt: skip
WHOLE_MODULE = (
    'import pytest\n\npytest.importorskip("no_such_module_anywhere")\n\ndef test_never_collected():\n    pass\n'
)


def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, no_skip: bool) -> pytest.RunResult:
    """The real conftest.py beside the skipping tests, in a fresh pytest process."""
    if no_skip:
        monkeypatch.setenv("TEXTWEAVER_NO_SKIP", "1")
    else:
        monkeypatch.delenv("TEXTWEAVER_NO_SKIP", raising=False)
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_skipping=SKIPPING)
    return pytester.runpytest_subprocess("-ra", "-p", "no:cacheprovider", "test_skipping.py")


def test_every_kind_of_skip_fails_under_the_variable_with_its_reason(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run(pytester, monkeypatch, no_skip=True)
    outcomes = result.parseoutcomes()  # a skip in setup (skipif, a fixture) is an error, in the test a failure
    assert outcomes.get("failed", 0) + outcomes.get("errors", 0) == len(SKIPPED), outcomes
    assert outcomes["passed"] == outcomes["xfailed"] == 1 and "skipped" not in outcomes, outcomes
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    for name in SKIPPED:
        result.stdout.re_match_lines([rf"(FAILED|ERROR) test_skipping.py::{name} - skipped"])
    for reason in ("no chromium here", "no node here", "not today", "No module named 'no_such_module_anywhere'",
                   "cannot mount a tmpfs", "never run", "gave up"):  # fmt: skip
        result.stdout.fnmatch_lines([f"skipped, and TEXTWEAVER_NO_SKIP=1 says every test must run: *{reason}"])


def test_a_module_skipped_at_import_fails_under_the_variable(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEXTWEAVER_NO_SKIP", "1")
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_whole=WHOLE_MODULE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "test_whole.py")
    assert result.ret != pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*skipped, and TEXTWEAVER_NO_SKIP=1 says every test must run*no_such_module*"])


def test_without_the_variable_a_skip_stays_a_visible_skip(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run(pytester, monkeypatch, no_skip=False)
    result.assert_outcomes(passed=1, skipped=5, xfailed=3)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "SKIPPED * no chromium here",
            "*5 skipped (reasons above): CI runs with TEXTWEAVER_NO_SKIP=1, where a skip fails the run.",
        ]
    )
