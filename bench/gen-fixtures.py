#!/usr/bin/env python3
"""Writes tests/fixtures/admission/*.json: AdmissionReview v1 CREATE requests as the API
server sends them to a mutating webhook (compact JSON, the object after the ServiceAccount
admission plugin has added the kube-api-access volume, with managedFields), for pods of
about 2, 6, 12 and 20 KB with several containers, and one Deployment.

Deterministic (no clock, no randomness): rerunning it rewrites the same bytes.
Run from the repository root: python3 bench/gen-fixtures.py
"""
import json
import os

OUT = os.path.join("tests", "fixtures", "admission")
TS = "2026-05-01T12:00:00Z"


def user():
    return {
        "username": "system:serviceaccount:kube-system:replicaset-controller",
        "uid": "8e1c6a5e-3f0b-4a57-9a2c-0c0f4b0f6f11",
        "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system",
                   "system:authenticated"],
    }


def api_access(suffix):
    return {
        "name": f"kube-api-access-{suffix}",
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt",
                               "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
                    "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    }


def api_mount(suffix):
    return {"name": f"kube-api-access-{suffix}", "readOnly": True,
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}


def container(name, image, suffix, n_env, ports=(), probes=True, extra_mounts=()):
    env = [{"name": f"{name.upper().replace('-', '_')}_SETTING_{i}",
            "value": f"value-{i}-for-{name}"} for i in range(n_env)]
    env.append({"name": "POD_NAME", "valueFrom": {"fieldRef": {
        "apiVersion": "v1", "fieldPath": "metadata.name"}}})
    env.append({"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": f"{name}-credentials", "key": "token"}}})
    c = {
        "name": name,
        "image": image,
        "args": ["--listen", ":8080", "--log-format", "json"],
        "env": env,
        "envFrom": [{"configMapRef": {"name": f"{name}-config"}}],
        "resources": {"limits": {"cpu": "500m", "memory": "256Mi"},
                      "requests": {"cpu": "100m", "memory": "128Mi"}},
        "volumeMounts": [*extra_mounts, api_mount(suffix)],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent",
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
    }
    if ports:
        c["ports"] = [{"name": p, "containerPort": 8080 + i, "protocol": "TCP"}
                      for i, p in enumerate(ports)]
    if probes:
        c["readinessProbe"] = {"httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"},
                               "timeoutSeconds": 1, "periodSeconds": 10,
                               "successThreshold": 1, "failureThreshold": 3}
        c["livenessProbe"] = {"tcpSocket": {"port": 8080}, "initialDelaySeconds": 5,
                              "timeoutSeconds": 1, "periodSeconds": 20,
                              "successThreshold": 1, "failureThreshold": 3}
    return c


def managed_fields(containers):
    spec = {f"k:{{\"name\":\"{c['name']}\"}}": {
        ".": {}, "f:env": {f"k:{{\"name\":\"{e['name']}\"}}": {".": {}, "f:name": {}}
                           for e in c.get("env", [])},
        "f:image": {}, "f:imagePullPolicy": {}, "f:name": {}, "f:resources": {},
    } for c in containers}
    return [{
        "manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
        "time": TS, "fieldsType": "FieldsV1",
        "fieldsV1": {"f:metadata": {"f:generateName": {}, "f:labels": {}, "f:ownerReferences": {}},
                     "f:spec": {"f:containers": spec}},
    }]


def pod(name, ns, suffix, containers, init=(), volumes=(), labels=None, annotations=None):
    all_c = [*init, *containers]
    meta = {
        "generateName": f"{name}-7d9c5b8f6-",
        "namespace": ns,
        "creationTimestamp": None,
        "labels": {"app.kubernetes.io/name": name, "pod-template-hash": "7d9c5b8f6",
                   **(labels or {})},
        "annotations": annotations or {},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                             "name": f"{name}-7d9c5b8f6",
                             "uid": "1f2e3d4c-5b6a-4798-8a7b-6c5d4e3f2a1b",
                             "controller": True, "blockOwnerDeletion": True}],
        "managedFields": managed_fields(all_c),
    }
    spec = {
        "volumes": [*volumes, api_access(suffix)],
        "containers": containers,
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": name,
        "serviceAccount": name,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "schedulerName": "default-scheduler",
        "tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists",
             "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
             "effect": "NoExecute", "tolerationSeconds": 300}],
        "priority": 0,
        "enableServiceLinks": True,
        "preemptionPolicy": "PreemptLowerPriority",
    }
    if init:
        spec["initContainers"] = list(init)
    return {"kind": "Pod", "apiVersion": "v1", "metadata": meta, "spec": spec,
            "status": {}}


def review(uid, obj, ns, resource="pods", group="", version="v1", kind="Pod"):
    gvk = {"group": group, "version": version, "kind": kind}
    gvr = {"group": group, "version": version, "resource": resource}
    return {
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": uid, "kind": gvk, "resource": gvr,
            "requestKind": gvk, "requestResource": gvr,
            "namespace": ns, "operation": "CREATE", "userInfo": user(),
            "object": obj, "oldObject": None, "dryRun": False,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    }


def work_volumes():
    return [{"name": "work", "emptyDir": {}},
            {"name": "servers", "configMap": {"name": "mcp-servers", "defaultMode": 420}}]


def work_mounts():
    return [{"name": "work", "mountPath": "/work"},
            {"name": "servers", "mountPath": "/etc/mcp", "readOnly": True}]


def small():
    s = "x7k2q"
    c = container("mcp-host", "ghcr.io/example/mcp-host:1.4.2", s, 2, ports=("http",),
                  probes=False, extra_mounts=work_mounts()[:1])
    del c["envFrom"]
    p = pod("agent-sandbox", "agents", s, [c], volumes=work_volumes()[:1],
            labels={"mcptrust.io/inject": "true"},
            annotations={"openshell.io/sandbox": "v0.0.31"})
    p["metadata"]["managedFields"] = []
    return review("0d2b5c3e-2f4a-4e53-9b1c-000000000002", p, "agents")


def typical():
    s = "b8m4t"
    init = [container("fetch-servers", "node:22-slim", s, 3, probes=False,
                      extra_mounts=work_mounts()[:1])]
    cs = [container("mcp-host", "ghcr.io/example/mcp-host:1.4.2", s, 8, ports=("http",),
                    extra_mounts=work_mounts()),
          container("oauth-proxy", "quay.io/oauth2-proxy/oauth2-proxy:v7.6.0", s, 6,
                    ports=("proxy",))]
    p = pod("github-mcp", "agents", s, cs, init=init, volumes=work_volumes())
    return review("0d2b5c3e-2f4a-4e53-9b1c-000000000006", p, "agents")


def gateway():
    s = "q2w9z"
    init = [container("migrate", "ghcr.io/example/gateway-migrate:2.0.1", s, 5, probes=False)]
    cs = [container(n, img, s, env, ports=("http", "metrics"), extra_mounts=work_mounts())
          for n, img, env in [
              ("gateway", "ghcr.io/example/mcp-gateway:2.0.1", 14),
              ("github-mcp", "ghcr.io/github/github-mcp-server:0.9.0", 10),
              ("filesystem-mcp", "ghcr.io/example/filesystem-mcp:1.2.0", 8),
              ("otel-collector", "otel/opentelemetry-collector:0.98.0", 6)]]
    p = pod("mcp-gateway", "gateway", s, cs, init=init, volumes=work_volumes())
    return review("0d2b5c3e-2f4a-4e53-9b1c-000000000012", p, "gateway")


def large():
    s = "h5n3v"
    init = [container(f"init-{i}", "busybox:1.36", s, 4, probes=False) for i in range(2)]
    cs = [container(f"tool-{i}", f"ghcr.io/example/mcp-tool-{i}:1.0.{i}", s, 8,
                    ports=("http",), extra_mounts=work_mounts())
          for i in range(6)]
    p = pod("mcp-toolbox", "tools", s, cs, init=init, volumes=work_volumes(),
            annotations={"prometheus.io/scrape": "true", "prometheus.io/port": "9090"})
    return review("0d2b5c3e-2f4a-4e53-9b1c-000000000020", p, "tools")


def deployment():
    pod_review = typical()
    template = pod_review["request"]["object"]
    tmeta = {"labels": {"app.kubernetes.io/name": "github-mcp"}}
    spec = template["spec"]
    # A template has no kube-api-access volume yet: the ServiceAccount plugin adds it to pods.
    spec["volumes"] = [v for v in spec["volumes"] if not v["name"].startswith("kube-api-access")]
    for c in spec["containers"] + spec.get("initContainers", []):
        c["volumeMounts"] = [m for m in c["volumeMounts"]
                             if not m["name"].startswith("kube-api-access")]
    for k in ("serviceAccount", "priority", "enableServiceLinks", "preemptionPolicy",
              "tolerations"):
        spec.pop(k, None)
    obj = {
        "kind": "Deployment", "apiVersion": "apps/v1",
        "metadata": {"name": "github-mcp", "namespace": "agents", "creationTimestamp": None,
                     "labels": {"app.kubernetes.io/name": "github-mcp"}},
        "spec": {"replicas": 2,
                 "selector": {"matchLabels": {"app.kubernetes.io/name": "github-mcp"}},
                 "template": {"metadata": tmeta, "spec": spec},
                 "strategy": {"type": "RollingUpdate", "rollingUpdate": {
                     "maxUnavailable": "25%", "maxSurge": "25%"}},
                 "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600},
        "status": {},
    }
    r = review("0d2b5c3e-2f4a-4e53-9b1c-0000000000d6", obj, "agents", resource="deployments",
               group="apps", kind="Deployment")
    r["request"]["userInfo"] = {"username": "alice@example.com",
                                "groups": ["system:authenticated"]}
    return r


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, body in [("pod-sandbox", small()), ("pod-typical", typical()),
                       ("pod-gateway", gateway()), ("pod-large", large()),
                       ("deployment", deployment())]:
        data = json.dumps(body, separators=(",", ":")).encode()
        path = os.path.join(OUT, f"{name}.json")
        with open(path, "wb") as f:
            f.write(data)
        print(f"{path}: {len(data)} bytes")


if __name__ == "__main__":
    main()
