"""Reads one tier's JUnit report and says whether the tier really ran (used by tests/host_tier.sh and CI).

A green pytest run is not enough: a host tier whose host did not load skips its host-only tests and still
exits 0. This prints the tier's own summary line and fails when
* pytest failed, errored or collected nothing,
* the tier's own tests did not run: a skip whose reason says the tier's host is missing (the host tier's
  COMFYUI_PATH / IPADAPTER_PLUS_PATH lines, the browser tier's Chromium / frontend lines), or no host-only
  test passed,
* with --strict (CI): any skip in the browser tier.
"""
from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET

# Skip reasons that mean "this tier's host is not there" (tests/conftest.py HOST_TIER_SKIP and the
# IPAdapter_plus / browser lines of the host harness).
MISSING_HOST_MARKERS = ("host tier skipped", "COMFYUI_PATH", "IPADAPTER_PLUS_PATH", "browser tier skipped")
# Test modules that exist only for a tier: at least one of their tests must pass in that tier.
TIER_ONLY_MODULES = {"host": ("tests.test_host_tier",), "browser": ("tests.browser.",)}


def read(path: str) -> list[tuple[str, str, str]]:
    """(classname::name, outcome, message) per test case."""
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                message = child.get("message", "") or (child.text or "")
                if child.tag == "skipped" and child.get("type") == "pytest.xfail":
                    outcome = "xfailed"
                break
        cases.append((name, outcome, message))
    return cases


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tier", required=True, choices=sorted(TIER_ONLY_MODULES) + ["unit"])
    p.add_argument("--junit", required=True)
    p.add_argument("--seconds", type=int, default=None)
    p.add_argument("--pytest-rc", type=int, default=0)
    p.add_argument("--strict", action="store_true")
    a = p.parse_args(argv)

    try:
        cases = read(a.junit)
    except (OSError, ET.ParseError) as e:
        print(f"{a.tier}: FAILED: no JUnit report ({e}); pytest exit code {a.pytest_rc}")
        return 1
    count = {k: sum(1 for _, o, _ in cases if o == k) for k in ("passed", "failed", "error", "skipped", "xfailed")}
    took = f" in {a.seconds} s" if a.seconds is not None else ""
    # The tier's own summary line, in the plain form CI reads.
    print(f"{a.tier}: {count['passed']} passed, {count['failed'] + count['error']} failed, "
          f"{count['skipped']} skipped{took}")

    problems = []
    if a.pytest_rc not in (0,):
        problems.append(f"pytest exited with {a.pytest_rc}")
    if not cases:
        problems.append("no test ran")
    # The unit tier has no host by design: its host-only tests skip with these lines.
    missing = [] if a.tier == "unit" else [
        (n, m) for n, o, m in cases if o == "skipped" and any(k in m for k in MISSING_HOST_MARKERS)]
    for n, m in missing[:5]:
        problems.append(f"skipped because the tier's host is missing: {n}: {m.strip()[:200]}")
    if len(missing) > 5:
        problems.append(f"... and {len(missing) - 5} more such skips")
    if a.tier in TIER_ONLY_MODULES:
        own = [(n, o) for n, o, _ in cases if n.startswith(TIER_ONLY_MODULES[a.tier])]
        if not any(o == "passed" for _, o in own):
            problems.append(f"none of the {a.tier}-only tests ({', '.join(TIER_ONLY_MODULES[a.tier])}) passed "
                            f"({len(own)} collected): the {a.tier} tier did not really run")
    if a.strict and a.tier == "browser":
        for n, _, m in [c for c in cases if c[1] == "skipped"][:5]:
            problems.append(f"skipped in strict mode: {n}: {m.strip()[:200]}")
    for line in problems:
        print(f"{a.tier}: FAILED: {line}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
