#!/usr/bin/env python3
"""Lint and render charts/mcptrust with Helm's own library, one line per case.

- Lint: helm-sdkpy's Lint action (Helm 4's `helm lint`: Chart.yaml, values against
  values.schema.json, every template rendered and parsed). Its Lint takes no values, so
  each value set is linted as a copy of the chart whose values.yaml is the set merged over
  the defaults by Helm's own coalescing.
- Accepted sets (the defaults and charts/mcptrust/ci/*-values.yaml) must lint without
  errors or warnings; the sets in REJECTED must fail, for the reason given.
- Render: helm-python-sdk renders each accepted set offline (Helm's engine; helm-sdkpy has
  no template action). The manifests must parse as YAML and hold what the set asks for.
  They are written to target/chart-render/<case>.yaml, where tests/chart.rs checks the
  operator config against the Rust parser and the RBAC against src/controller/rbac.rs.

Exit status 1 when any expectation fails.
"""

from __future__ import annotations

import asyncio
import copy
import json
import pathlib
import shutil
import sys
import tempfile

try:
    import helm_python
    import helm_sdkpy
    import yaml
except ImportError as e:  # pragma: no cover
    sys.exit(
        f"helm-lint: {e}; install with: pip install --ignore-requires-python "
        "helm-sdkpy helm-python-sdk cffi pyyaml"
    )

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "mcptrust"
RENDER_DIR = ROOT / "target" / "chart-render"
RELEASE, NAMESPACE = "mcptrust", "mcptrust"

# (name, values, substring the rejection must mention). The schema rejects these, so
# `helm lint`, `helm template` and `helm install` all refuse them.
REJECTED = [
    ("replicaCount=0", {"replicaCount": 0}, "/replicaCount"),
    ("reloader.adminPort=0", {"reloader": {"adminPort": 0}}, "/reloader/adminPort"),
    ("reloader.resources cpu as a number", {"reloader": {"resources": {"requests": {"cpu": 1}}}}, "/reloader/resources/requests/cpu"),
    ("failurePolicy=Sometimes", {"webhook": {"failurePolicy": "Sometimes"}}, "/webhook/failurePolicy"),
    ("certMode=selfSigned", {"webhook": {"certMode": "selfSigned"}}, "/webhook/certMode"),
    ("timeoutSeconds=0", {"webhook": {"timeoutSeconds": 0}}, "/webhook/timeoutSeconds"),
    ("timeoutSeconds=31", {"webhook": {"timeoutSeconds": 31}}, "/webhook/timeoutSeconds"),
    ("httpsProxy without scheme", {"proxy": {"httpsProxy": "egress-proxy:3128"}}, "/proxy/httpsProxy"),
    ("httpProxy socks5", {"proxy": {"httpProxy": "socks5://10.0.0.1:1080"}}, "/proxy/httpProxy"),
    ("provided without caBundle", {"webhook": {"certMode": "provided", "provided": {"secretName": "x"}}}, "caBundle"),
    ("unknown key (typo replicas)", {"replicas": 3}, "'replicas' not allowed"),
    ("caVariables file=all", {"injection": {"caVariables": [{"name": "SSL_CERT_FILE", "file": "all"}]}}, "/injection/caVariables/0/file"),
    ("extraEnv bad name", {"injection": {"extraEnv": [{"name": "1BAD-NAME", "value": "x"}]}}, "/injection/extraEnv/0/name"),
    ("extraCAs is a path (--set, not --set-file)", {"trust": {"extraCAs": "corp.pem"}}, "/trust/extraCAs"),
    ("extraCAsFrom both kinds", {"trust": {"extraCAsFrom": [{"configMap": {"name": "a", "key": "ca.crt"}, "secret": {"name": "b", "key": "ca.crt"}}]}}, "/trust/extraCAsFrom/0"),
    ("apiServerIps not an IP", {"proxy": {"apiServerIps": ["kubernetes.default"]}}, "/proxy/apiServerIps/0"),
    ("serviceCidrs not a CIDR", {"proxy": {"serviceCidrs": ["10.96.0.0"]}}, "/proxy/serviceCidrs/0"),
    ("log.format=yaml", {"log": {"format": "yaml"}}, "/log/format"),
    ("private key in extraCAs", {"trust": {"extraCAs": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n"}}, "/trust/extraCAs"),
    ("token lifetime 3607 (extended to a year)", {"serviceAccount": {"token": {"expirationSeconds": 3607}}}, "/serviceAccount/token/expirationSeconds"),
    ("token lifetime below 600", {"serviceAccount": {"token": {"expirationSeconds": 300}}}, "/serviceAccount/token/expirationSeconds"),
    ("networkPolicy unknown key", {"networkPolicy": {"ingress": {"webhookFrom": []}}}, "'webhookFrom' not allowed"),
    ("networkPolicy peer with a typo", {"networkPolicy": {"ingress": {"adminFrom": [{"namespaceSelecter": {}}]}}}, "/networkPolicy/ingress/adminFrom/0"),
    ("Deny with Warn", {"enforcement": {"requireInjection": {"enabled": True, "validationActions": ["Deny", "Warn"]}}}, "/enforcement/requireInjection/validationActions"),
]

# Relations a schema cannot express: the templates `fail`, so `helm template` and
# `helm install` refuse them (Helm 4's lint only logs a template's fail).
REJECTED_BY_TEMPLATE = [
    ("grace period <= preStop + drain", {"shutdown": {"terminationGracePeriodSeconds": 30}}, "must exceed"),
    ("ServiceMonitor without the metrics Service", {"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}}, "needs metrics.service.enabled"),
]


def accepted_cases() -> list[tuple[str, dict, str, str]]:
    """(case, values, release, namespace): the defaults, each ci/*-values.yaml, and the
    defaults under another release name and namespace."""
    cases = [("default", {}, RELEASE, NAMESPACE)]
    for f in sorted((CHART / "ci").glob("*-values.yaml")):
        cases.append((f.name.removesuffix("-values.yaml"), helm_python.values_from_yaml(f.read_text()), RELEASE, NAMESPACE))
    cases.append(("release-prod-in-platform", {}, "prod", "platform"))
    return cases


def lint_sdkpy(merged: dict) -> list[tuple[int, str]]:
    """helm-sdkpy Lint of a chart copy whose values.yaml is `merged`: [(severity, path)]."""
    with tempfile.TemporaryDirectory() as tmp:
        copy_dir = pathlib.Path(tmp) / "mcptrust"
        shutil.copytree(CHART, copy_dir, ignore=shutil.ignore_patterns("ci"))
        (copy_dir / "values.yaml").write_text(json.dumps(merged))
        config = helm_sdkpy.Configuration(namespace=NAMESPACE)
        report = asyncio.run(helm_sdkpy.Lint(config).run(str(copy_dir)))
    return [(m["Severity"], m["Path"]) for m in report.get("Messages") or []]


def reasons(values: dict) -> str:
    """Helm's lint messages for `values` (helm-sdkpy returns severities without text)."""
    report = helm_python.lint(str(CHART), values, namespace=NAMESPACE)
    problems = [" ".join(m["error"].split()) for m in report["messages"] if m["severity"] >= 2]
    return problems[0] if problems else "(no message)"


def render(values: dict, release: str, namespace: str) -> list[dict]:
    chart = helm_python.Chart.load(str(CHART))
    out = chart.render(values=values, name=release, namespace=namespace, is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            if "mcptrust.io/injection=enabled" not in text:
                raise AssertionError("NOTES.txt does not say how to opt a namespace in")
            continue
        for doc in yaml.safe_load_all(text):
            if doc is not None:
                docs.append(doc)
    return docs


def check_rendered(case: str, v: dict, docs: list[dict], release: str, ns: str) -> list[str]:
    """What the rendered manifests must hold for the merged values `v`; [] when all do."""
    errs: list[str] = []
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        for key in ("apiVersion", "kind", "metadata"):
            if key not in d:
                errs.append(f"an object without {key}: {str(d)[:80]}")
        by_kind.setdefault(d.get("kind", "?"), []).append(d)
        if d.get("kind") not in {"ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration",
                                 "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}:
            if d["metadata"].get("namespace") != ns:
                errs.append(f"{d['kind']} {d['metadata'].get('name')} is not in namespace {ns}")

    def one(kind: str) -> dict:
        items = by_kind.get(kind, [])
        if len(items) != 1:
            errs.append(f"expected one {kind}, got {len(items)}")
            return {}
        return items[0]

    mwc = one("MutatingWebhookConfiguration")
    hooks = mwc.get("webhooks") or [{}]
    w = hooks[0]
    want = {
        "admissionReviewVersions": ["v1"], "sideEffects": "None", "reinvocationPolicy": "IfNeeded",
        "failurePolicy": v["webhook"]["failurePolicy"], "timeoutSeconds": v["webhook"]["timeoutSeconds"],
    }
    for k, x in want.items():
        if w.get(k) != x:
            errs.append(f"webhook {k} is {w.get(k)!r}, want {x!r}")
    if w.get("rules") != [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"}]:
        errs.append(f"webhook rules: {w.get('rules')}")
    svc = (w.get("clientConfig") or {}).get("service") or {}
    if (svc.get("path"), svc.get("port"), svc.get("namespace")) != ("/mutate", 443, ns):
        errs.append(f"webhook clientConfig.service: {svc}")
    exprs = {e["key"]: e for e in (w.get("namespaceSelector") or {}).get("matchExpressions", [])}
    inj = exprs.get("mcptrust.io/injection", {})
    if (inj.get("operator"), inj.get("values")) != ("In", ["enabled"]):
        errs.append(f"namespaceSelector opt-in: {inj}")
    excl = exprs.get("kubernetes.io/metadata.name", {})
    if excl.get("operator") != "NotIn" or not {"kube-system", ns} <= set(excl.get("values", [])):
        errs.append(f"namespaceSelector does not exclude kube-system and {ns}: {excl}")
    if (w.get("objectSelector") or {}).get("matchExpressions") != [{"key": "mcptrust.io/inject", "operator": "NotIn", "values": ["false"]}]:
        errs.append(f"objectSelector: {w.get('objectSelector')}")

    mode = v["webhook"]["certMode"]
    ca_bundle = (w.get("clientConfig") or {}).get("caBundle")
    annotations = mwc.get("metadata", {}).get("annotations") or {}
    certs = by_kind.get("Certificate", [])
    if mode == "provided" and ca_bundle != v["webhook"]["provided"]["caBundle"]:
        errs.append("provided: caBundle is not the value given")
    if mode != "provided" and ca_bundle:
        errs.append(f"{mode}: caBundle must be left to the operator or cainjector")
    if mode == "certManager":
        if not annotations.get("cert-manager.io/inject-ca-from"):
            errs.append("certManager: no cert-manager.io/inject-ca-from annotation")
        serving = [c for c in certs if not c["spec"].get("isCA")]
        if len(serving) != 1 or f"{(svc.get('name'))}.{ns}.svc" not in serving[0]["spec"].get("dnsNames", []):
            errs.append("certManager: no serving Certificate for the webhook Service")
    elif certs or "cert-manager.io/inject-ca-from" in annotations:
        errs.append(f"{mode}: cert-manager objects rendered")

    dep = one("Deployment")
    pod = dep.get("spec", {}).get("template", {}).get("spec", {})
    if dep and dep["spec"].get("replicas") != v["replicaCount"]:
        errs.append(f"replicas {dep['spec'].get('replicas')}, want {v['replicaCount']}")
    c = (pod.get("containers") or [{}])[0]
    sc, psc = c.get("securityContext", {}), pod.get("securityContext", {})
    if dep and not (sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False
                    and sc.get("capabilities", {}).get("drop") == ["ALL"] and psc.get("runAsNonRoot")
                    and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault"):
        errs.append(f"security context too weak: pod {psc}, container {sc}")
    if dep and pod.get("automountServiceAccountToken") is not False:
        errs.append("the operator pod must not automount its token (it projects it explicitly)")
    errs += check_token_volume(v, pod, c) if dep else []
    sa = by_kind.get("ServiceAccount", [{}])[0]
    if sa.get("automountServiceAccountToken") is not False:
        errs.append("the ServiceAccount must not mount its token by default")
    probes = (c.get("livenessProbe", {}).get("httpGet", {}).get("path"), c.get("readinessProbe", {}).get("httpGet", {}).get("path"))
    if dep and probes != ("/livez", "/readyz"):
        errs.append(f"probes {probes}")
    sh = v["shutdown"]
    if dep and pod.get("terminationGracePeriodSeconds", 0) <= sh["preStopSleepSeconds"] + sh["drainTimeoutSeconds"]:
        errs.append("terminationGracePeriodSeconds does not cover preStop + drain")
    tls_vol = next((x for x in pod.get("volumes", []) if x.get("name") == "webhook-tls"), {})
    if dep and bool(tls_vol.get("secret", {}).get("optional")) != (mode != "provided"):
        errs.append(f"webhook-tls volume optional must be {mode != 'provided'} in {mode} mode")
    items = sorted(i.get("key") for i in tls_vol.get("secret", {}).get("items", []))
    if dep and items != ["tls.crt", "tls.key"]:
        errs.append(f"webhook-tls must mount tls.crt and tls.key only (the CA key stays in the API), got {items}")
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    if dep and env.get("MCPTRUST_WEBHOOK_CERT_MODE") != mode:
        errs.append("MCPTRUST_WEBHOOK_CERT_MODE does not follow webhook.certMode")
    if dep and v["replicaCount"] > 1 and v["topologySpread"]["mode"] != "none" and not pod.get("topologySpreadConstraints"):
        errs.append("several replicas but no topology spread")

    errs += check_network_policy(v, by_kind, dep)
    pdbs = by_kind.get("PodDisruptionBudget", [])
    want_pdb = v["podDisruptionBudget"]["enabled"] and v["replicaCount"] > 1
    if bool(pdbs) != want_pdb:
        errs.append(f"PodDisruptionBudget rendered: {bool(pdbs)}, want {want_pdb}")
    want_vap = v["enforcement"]["requireInjection"]["enabled"]
    for kind in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"):
        if bool(by_kind.get(kind)) != want_vap:
            errs.append(f"{kind} rendered: {bool(by_kind.get(kind))}, want {want_vap}")
    if bool(by_kind.get("ServiceMonitor")) != v["metrics"]["serviceMonitor"]["enabled"]:
        errs.append("ServiceMonitor does not follow metrics.serviceMonitor.enabled")
    for sm in by_kind.get("ServiceMonitor", []):
        if any(e.get("honorLabels") is not True for e in sm["spec"]["endpoints"]):
            errs.append("ServiceMonitor endpoints must honor the per-McpServer namespace label")
    errs += check_observability(v, by_kind)
    ports = [p.get("port") for s in by_kind.get("Service", []) for p in s["spec"]["ports"]]
    if 443 not in ports:
        errs.append(f"no Service port 443 (ports {ports})")

    cms = [d for d in by_kind.get("ConfigMap", []) if "config.yaml" in (d.get("data") or {})]
    config = yaml.safe_load(cms[0]["data"]["config.yaml"]) if len(cms) == 1 else {}
    if len(cms) != 1:
        errs.append("expected one ConfigMap with config.yaml")
    if (config.get("proxy") or {}).get("httpsProxy") != (v["proxy"]["httpsProxy"] or None):
        errs.append("config proxy.httpsProxy does not follow the values")
    if v["trust"]["extraCAs"].strip() and v["trust"]["extraCAs"].strip() not in (config.get("defaultTrust") or {}).get("extraCasPem", ""):
        errs.append("config defaultTrust.extraCasPem lacks trust.extraCAs")
    return errs


SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def check_token_volume(v: dict, pod: dict, c: dict) -> list[str]:
    """The projected ServiceAccount token: mounted where kube's in-cluster config reads it
    (token, ca.crt, namespace), with the lifetime and audience of the values."""
    errs: list[str] = []
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    m = mounts.get(SA_DIR)
    if not m or not m.get("readOnly"):
        return [f"no read-only mount at {SA_DIR}: {sorted(mounts)}"]
    vol = next((x for x in pod.get("volumes", []) if x.get("name") == m["name"]), {})
    sources = (vol.get("projected") or {}).get("sources") or []
    files: dict[str, dict] = {}
    for src in sources:
        if "serviceAccountToken" in src:
            files[src["serviceAccountToken"]["path"]] = src
        for kind in ("configMap", "downwardAPI"):
            for item in (src.get(kind) or {}).get("items", []):
                files[item["path"]] = src
    if sorted(files) != ["ca.crt", "namespace", "token"]:
        errs.append(f"the projected volume holds {sorted(files)}, want ca.crt, namespace, token")
        return errs
    tok = files["token"]["serviceAccountToken"]
    want = v["serviceAccount"]["token"]
    if tok.get("expirationSeconds") != want["expirationSeconds"] or tok.get("audience", "") != want["audience"]:
        errs.append(f"token source {tok} does not follow serviceAccount.token {want}")
    if (files["ca.crt"].get("configMap") or {}).get("name") != "kube-root-ca.crt":
        errs.append("ca.crt must come from the kube-root-ca.crt ConfigMap")
    ns_item = next(i for i in files["namespace"]["downwardAPI"]["items"] if i["path"] == "namespace")
    if ns_item.get("fieldRef", {}).get("fieldPath") != "metadata.namespace":
        errs.append(f"namespace file: {ns_item}")
    return errs


def check_network_policy(v: dict, by_kind: dict[str, list[dict]], dep: dict) -> list[str]:
    """The NetworkPolicy of mcptrust's own pods: rendered iff networkPolicy.enabled; it
    selects exactly the Deployment's pods; in: the webhook port from anywhere, the admin
    port from networkPolicy.ingress.adminFrom only; out: the API server, DNS and the
    endpoint ports and the reloader sidecars' admin port, nothing else."""
    errs: list[str] = []
    nps = by_kind.get("NetworkPolicy", [])
    want = v["networkPolicy"]
    if len(nps) != (1 if want["enabled"] else 0):
        return [f"{len(nps)} NetworkPolicies rendered, networkPolicy.enabled is {want['enabled']}"]
    for np in nps:
        spec = np["spec"]
        tpl_labels = dep.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})
        sel = spec.get("podSelector", {}).get("matchLabels", {})
        if sel != dep.get("spec", {}).get("selector", {}).get("matchLabels") or not sel.items() <= tpl_labels.items():
            errs.append(f"NetworkPolicy podSelector {sel} is not the Deployment's selector")
        if sorted(spec.get("policyTypes", [])) != ["Egress", "Ingress"]:
            errs.append(f"policyTypes {spec.get('policyTypes')}")
        ingress = {tuple(p["port"] for p in r.get("ports", [])): r for r in spec.get("ingress", [])}
        if "from" in ingress.get(("webhook",), {"from": 1}):
            errs.append("the webhook port must be open to any source (the API server's address is not knowable)")
        admin = ingress.get(("admin",))
        if (admin or {}).get("from") != (want["ingress"]["adminFrom"] or None):
            errs.append(f"admin port peers {admin} are not networkPolicy.ingress.adminFrom")
        if set(ingress) - {("webhook",), ("admin",)}:
            errs.append(f"unexpected ingress rules: {list(ingress)}")
        egress = [sorted((p["port"], p.get("protocol")) for p in r.get("ports", [])) for r in spec.get("egress", [])]
        e = want["egress"]
        expect = [sorted((p, "TCP") for p in e["apiServerPorts"]), [(53, "TCP"), (53, "UDP")]]
        if e["endpointPorts"]:
            expect.append(sorted((p, "TCP") for p in e["endpointPorts"]))
        # The reloader sidecars' /status, where the endpoints are.
        expect.append([(v["reloader"]["adminPort"], "TCP")])
        if egress != expect:
            errs.append(f"egress ports {egress}, want {expect}")
        if any(not r.get("ports") for r in spec.get("egress", []) + spec.get("ingress", [])):
            errs.append("a NetworkPolicy rule without ports")
    return errs


def check_observability(v: dict, by_kind: dict[str, list[dict]]) -> list[str]:
    """The PrometheusRule and the dashboard ConfigMap: rendered only when enabled, and then
    exactly the files under charts/mcptrust/files/ (the ones promtool and tests/alerts.rs
    check), with the runbook URL base substituted."""
    errs: list[str] = []
    rules = by_kind.get("PrometheusRule", [])
    want = v["metrics"]["prometheusRule"]
    if len(rules) != (1 if want["enabled"] else 0):
        errs.append(f"{len(rules)} PrometheusRule rendered, metrics.prometheusRule.enabled is {want['enabled']}")
    base = want["runbookUrlBase"]
    source = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text().replace("RUNBOOK_URL_BASE", base))
    for r in rules:
        if r.get("apiVersion") != "monitoring.coreos.com/v1":
            errs.append(f"PrometheusRule apiVersion {r.get('apiVersion')}")
        if r.get("spec") != source:
            errs.append("PrometheusRule spec is not files/prometheus-rules.yaml")
        for k, val in (want.get("labels") or {}).items():
            if r["metadata"].get("labels", {}).get(k) != val:
                errs.append(f"PrometheusRule lacks label {k}={val}")
        for g in r.get("spec", {}).get("groups", []):
            for rule in g["rules"]:
                ann = rule.get("annotations", {})
                if not (ann.get("summary") and ann.get("description") and ann.get("runbook_url", "").startswith(base + "#")):
                    errs.append(f"alert {rule.get('alert')} lacks a summary, description or runbook_url under {base}")
    dashboards = [d for d in by_kind.get("ConfigMap", []) if (d["metadata"].get("labels") or {}).get("grafana_dashboard") == "1"]
    want = v["metrics"]["grafanaDashboard"]
    if len(dashboards) != (1 if want["enabled"] else 0):
        errs.append(f"{len(dashboards)} dashboard ConfigMaps rendered, metrics.grafanaDashboard.enabled is {want['enabled']}")
    source = json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    for d in dashboards:
        if json.loads(d.get("data", {}).get("mcptrust.json", "null")) != source:
            errs.append("the dashboard ConfigMap does not hold files/grafana-dashboard.json")
        for k, val in (want.get("annotations") or {}).items():
            if (d["metadata"].get("annotations") or {}).get(k) != val:
                errs.append(f"dashboard ConfigMap lacks annotation {k}={val}")
    return errs


def main() -> int:
    failed = 0
    helm_python.disable_logging()
    print(f"helm-lint: {helm_sdkpy.get_version()} (lint), helm-python-sdk {helm_python.helm_sdk_version()} (render)")
    chart = helm_python.Chart.load(str(CHART))
    RENDER_DIR.mkdir(parents=True, exist_ok=True)
    for old in RENDER_DIR.glob("*.yaml"):
        old.unlink()
    for case, values, release, ns in accepted_cases():
        merged = chart.merge_values(values)
        msgs = [m for m in lint_sdkpy(merged) if m[0] >= 2]
        if msgs:
            failed += 1
            print(f"FAIL lint   {case}: {msgs}: {reasons(values)}")
            continue
        try:
            docs = render(values, release, ns)
            errs = check_rendered(case, merged, docs, release, ns)
        except Exception as e:  # a render error or a malformed manifest
            docs, errs = [], [f"{type(e).__name__}: {e}"]
        if errs:
            failed += 1
            print(f"FAIL render {case}: " + "; ".join(errs))
            continue
        (RENDER_DIR / f"{case}.yaml").write_text(
            "".join("---\n" + yaml.safe_dump(d, sort_keys=False) for d in docs)
        )
        kinds = sorted({d["kind"] for d in docs})
        print(f"ok   lint   {case}: no errors or warnings; rendered {len(docs)} objects ({', '.join(kinds)})")
    for case, values, needle in REJECTED:
        merged = chart.merge_values(values)
        errors = [m for m in lint_sdkpy(merged) if m[0] >= 3]
        why = reasons(copy.deepcopy(values))
        if not errors:
            failed += 1
            print(f"FAIL reject {case}: helm-sdkpy lint accepted it")
        elif needle.lower() not in why.lower():
            failed += 1
            print(f"FAIL reject {case}: rejected, but not for {needle!r}: {why}")
        else:
            print(f"ok   reject {case}: {why[:150]}")
    for case, values, needle in REJECTED_BY_TEMPLATE:
        try:
            render(values, RELEASE, NAMESPACE)
            failed += 1
            print(f"FAIL reject {case}: the chart rendered it")
        except helm_python.HelmError as e:
            why = " ".join(str(e).split())
            if needle in why:
                print(f"ok   reject {case}: render refused: {why[:150]}")
            else:
                failed += 1
                print(f"FAIL reject {case}: refused, but not for {needle!r}: {why}")
    total = len(accepted_cases()) + len(REJECTED) + len(REJECTED_BY_TEMPLATE)
    print(f"helm-lint: {total - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
