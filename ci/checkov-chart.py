#!/usr/bin/env python3
"""Scan charts/mcptrust with checkov's Kubernetes framework, offline, in every values set
that ci/helm-lint.py accepts (the defaults, charts/mcptrust/ci/*-values.yaml, another
release name and namespace), rendered with Helm's engine exactly as helm-lint.py renders
them.

- A failed check fails the scan: a finding is either fixed or carries checkov's own skip
  annotation (`checkov.io/skipN: CHECK_ID=reason`) on the object.
- A skipped check without a reason fails the scan too.
- Two controls prove the scan can fail: with networkPolicy.enabled=false checkov must report
  CKV2_K8S_6 (pods without a NetworkPolicy), and the defaults with their skip annotations
  stripped of the reason must be caught as skips without a reason.
- With the hardened choices of ci/pinned-values.yaml the Deployment carries no skip.

usage: checkov-chart.py [CHECKOV]   (default: $MCPTRUST_CHECKOV, then checkov on PATH)
Exit status 1 when any expectation fails; the last line is "checkov-chart: N passed, M failed".
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("helm_lint", ROOT / "ci" / "helm-lint.py")
helm_lint = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helm_lint)

# checkov's text for a skip annotation without "=reason".
NO_REASON = {"", "no comment provided"}


def strip_reasons(docs: list[dict]) -> list[dict]:
    """The documents with every checkov.io/skip annotation cut down to its check id."""
    for d in docs:
        ann = d.get("metadata", {}).get("annotations") or {}
        for k, v in list(ann.items()):
            if k.startswith("checkov.io/skip"):
                ann[k] = v.split("=", 1)[0]
    return docs


def cases() -> list[tuple[str, list[dict]]]:
    """(name, rendered documents): the accepted sets, then the controls (names start with
    "control-"). Each set is rendered as a release of its own (its helm-lint release and
    namespace plus the case name): checkov's graph links a NetworkPolicy to every pod
    its podSelector's labels match, in any namespace and file of a run, and must not
    credit one set's policy to another set's pods."""
    out = []
    for case, values, release, ns in helm_lint.accepted_cases():
        out.append((case, helm_lint.render(values, f"{release}-{case}", f"{ns}-{case}")))
    rel, ns = helm_lint.RELEASE, helm_lint.NAMESPACE
    out.append(("control-no-networkpolicy", helm_lint.render({"networkPolicy": {"enabled": False}}, f"{rel}-nonp", f"{ns}-nonp")))
    out.append(("control-no-reason", strip_reasons(helm_lint.render({}, f"{rel}-noreason", f"{ns}-noreason"))))
    return out


def run_checkov(checkov: str, directory: pathlib.Path) -> dict:
    """checkov's JSON report over every file of `directory` (one run: its start-up
    dominates)."""
    proc = subprocess.run(
        [checkov, "--framework", "kubernetes", "--skip-download", "-d", str(directory), "-o", "json"],
        capture_output=True, text=True, cwd=directory, check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )
    if proc.returncode not in (0, 1):
        raise SystemExit(f"checkov exited {proc.returncode}: {proc.stderr[-2000:]}")
    report = json.loads(proc.stdout)
    return report[0] if isinstance(report, list) else report


def main() -> int:
    checkov = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("MCPTRUST_CHECKOV") or shutil.which("checkov")
    if not checkov:
        print("checkov-chart: checkov not found (pip install checkov)", file=sys.stderr)
        return 2
    helm_lint.helm_python.disable_logging()
    rendered = cases()
    with tempfile.TemporaryDirectory() as tmp:
        d = pathlib.Path(tmp)
        for case, docs in rendered:
            (d / f"{case}.yaml").write_text("".join("---\n" + yaml.safe_dump(x, sort_keys=False) for x in docs))
        report = run_checkov(checkov, d)
    version = report.get("summary", {}).get("checkov_version")
    results = report.get("results", {})
    by_case: dict[str, dict[str, list[dict]]] = {c: {"failed": [], "skipped": [], "passed": []} for c, _ in rendered}
    for kind in ("failed", "skipped", "passed"):
        for r in results.get(f"{kind}_checks", []):
            by_case[pathlib.Path(r["file_path"]).stem][kind].append(r)
    errors = results.get("parsing_errors") or []
    print(f"checkov-chart: checkov {version}, {len(rendered)} rendered sets")
    failed = 1 if errors else 0
    if errors:
        print(f"FAIL parsing errors: {errors}")
    for case, _ in rendered:
        r = by_case[case]
        fails = sorted({f"{x['check_id']} {x['resource']}" for x in r["failed"]})
        unexplained = sorted({f"{x['check_id']} {x['resource']}" for x in r["skipped"]
                              if (x["check_result"].get("suppress_comment") or "").strip().lower() in NO_REASON})
        skips = sorted({f"{x['check_id']}" for x in r["skipped"]})
        problems = []
        if not r["passed"]:
            problems.append("checkov passed no check: did it read the file?")
        if case == "control-no-networkpolicy":
            if not any(x["check_id"] == "CKV2_K8S_6" for x in r["failed"]):
                problems.append(f"CKV2_K8S_6 not reported without the NetworkPolicy (failed: {fails})")
        elif case == "control-no-reason":
            if not unexplained:
                problems.append("skips without a reason went unnoticed")
        else:
            if fails:
                problems.append(f"failed checks: {fails}")
            if unexplained:
                problems.append(f"skipped without a reason: {unexplained}")
            if case == "pinned" and any(x["resource"].startswith("Deployment.") for x in r["skipped"]):
                problems.append("the hardened values still skip checks on the Deployment")
        if problems:
            failed += 1
            print(f"FAIL {case}: " + "; ".join(problems))
        elif case.startswith("control-"):
            print(f"ok   {case}: caught ({', '.join(fails) or ', '.join(unexplained)})")
        else:
            print(f"ok   {case}: {len(r['passed'])} passed, {len(r['failed'])} failed, skipped with a reason: {', '.join(skips) or 'none'}")
    total = len(rendered) + 1
    print(f"checkov-chart: {total - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
