#!/usr/bin/env python3
"""Install or upgrade charts/mcptrust with Helm's own library (helm-sdkpy), for the e2e
tests on a real kube-apiserver (tests/e2e_helm.rs).

usage: helm-release.py install|upgrade KUBECONFIG RELEASE NAMESPACE [VALUES_JSON]

Never waits for readiness (the test API server runs no pods). Prints the release's
status and revision; exits 1 with Helm's error otherwise.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import sys

import helm_sdkpy

CHART = pathlib.Path(__file__).resolve().parent.parent / "charts" / "mcptrust"


async def main() -> int:
    action, kubeconfig, release, namespace = sys.argv[1:5]
    values = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
    config = helm_sdkpy.Configuration(namespace=namespace, kubeconfig=kubeconfig)
    if action == "install":
        result = await helm_sdkpy.Install(config).run(
            release, str(CHART), values=values, create_namespace=True, wait=False, timeout=120
        )
    elif action == "upgrade":
        result = await helm_sdkpy.Upgrade(config).run(
            release, str(CHART), values=values, wait=False, timeout=120
        )
    else:
        print(f"unknown action {action}", file=sys.stderr)
        return 2
    info = result.get("info", {}) if isinstance(result, dict) else {}
    print(json.dumps({"status": info.get("status"), "version": result.get("version")}))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except helm_sdkpy.HelmError as e:
        print(f"helm: {e}", file=sys.stderr)
        sys.exit(1)
