#!/usr/bin/env python3
"""Writes fuzz/seeds/*.json: the fixtures of tests/fixtures/admission/ shrunk to what the
injector reads (managedFields, probes, resources, most env dropped), plus variants that
reach each of its branches: opt-out label, skip-env and overlay annotations, a volume and a
mount path already taken, env already set, a pod already injected, CronJob and bare pod.
Small seeds keep the fuzzer fast (thousands of executions per second).
Run from the repository root: python3 fuzz/make-seeds.py"""
import copy, glob, json, os

OUT = "fuzz/seeds"
DROP = {"managedFields", "ownerReferences", "tolerations", "readinessProbe", "livenessProbe",
        "resources", "securityContext", "userInfo", "options", "requestKind", "requestResource",
        "terminationMessagePath", "terminationMessagePolicy", "imagePullPolicy", "args",
        "schedulerName", "priority", "preemptionPolicy", "dnsPolicy", "restartPolicy",
        "terminationGracePeriodSeconds", "enableServiceLinks", "serviceAccount", "strategy",
        "revisionHistoryLimit", "progressDeadlineSeconds", "ports"}


def shrink(v):
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if k in DROP:
                continue
            if k == "env" and isinstance(x, list):
                x = x[:1] + x[-1:]
            if k in ("containers", "initContainers") and isinstance(x, list):
                x = x[:2]
            if k == "projected":
                x = {"sources": []}
            out[k] = shrink(x)
        return out
    if isinstance(v, list):
        return [shrink(x) for x in v]
    return v


def write(name, review):
    data = json.dumps(review, separators=(",", ":")).encode()
    with open(os.path.join(OUT, name + ".json"), "wb") as f:
        f.write(data)
    print(f"{name}: {len(data)} bytes")


def main():
    os.makedirs(OUT, exist_ok=True)
    base = {}
    for path in sorted(glob.glob("tests/fixtures/admission/*.json")):
        name = os.path.basename(path)[:-5]
        base[name] = shrink(json.load(open(path)))
        write(name, base[name])

    pod = base["pod-typical"]
    obj = pod["request"]["object"]

    def variant(name, edit):
        r = copy.deepcopy(pod)
        edit(r["request"]["object"])
        write(name, r)

    variant("opt-out", lambda o: o["metadata"]["labels"].update({"mcptrust.io/inject": "false"}))
    variant("skip-env-overlay", lambda o: o["metadata"]["annotations"].update({
        "mcptrust.io/skip-env": "NODE_EXTRA_CA_CERTS, SSL_CERT_FILE",
        "mcptrust.io/overlay-system-trust": "true",
        "mcptrust.io/mtls-client-of": "agents/github"}))
    variant("volume-taken", lambda o: o["spec"]["volumes"].append(
        {"name": "mcptrust-trust", "emptyDir": {}}))
    variant("mount-taken", lambda o: o["spec"]["containers"][0]["volumeMounts"].append(
        {"name": "work", "mountPath": "/etc/mcptrust/trust"}))
    variant("env-set", lambda o: o["spec"]["containers"][0]["env"].extend([
        {"name": "SSL_CERT_FILE", "value": "/mine.pem"},
        {"name": "https_proxy", "valueFrom": {"configMapKeyRef": {"name": "p", "key": "k"}}}]))
    variant("no-volumes-no-env", lambda o: [o["spec"].pop("volumes"),
                                            [c.pop("env", None) or c.pop("volumeMounts", None)
                                             for c in o["spec"]["containers"]]])
    variant("null-fields", lambda o: o["metadata"].update({"annotations": None, "labels": None}))
    variant("ephemeral", lambda o: o["spec"].update({"ephemeralContainers": [
        {"name": "debug", "image": "busybox", "env": []}]}))
    variant("already-injected", lambda o: o["metadata"]["annotations"].update({
        "mcptrust.io/injected": "0.1.0",
        "mcptrust.io/trust-bundle-sha256": "ab" * 32}))

    dep = base["deployment"]
    cron = copy.deepcopy(dep)
    cron["request"]["object"] = {
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "nightly", "namespace": "agents"},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {
            "template": dep["request"]["object"]["spec"]["template"]}}}}
    cron["request"]["kind"] = {"group": "batch", "version": "v1", "kind": "CronJob"}
    cron["request"]["resource"] = {"group": "batch", "version": "v1", "resource": "cronjobs"}
    write("cronjob", cron)

    bare = copy.deepcopy(pod)
    del bare["request"]["object"]["kind"]
    del bare["request"]["object"]["apiVersion"]
    write("bare-pod", bare)

    delete = copy.deepcopy(pod)
    delete["request"]["operation"] = "DELETE"
    delete["request"]["oldObject"] = delete["request"]["object"]
    delete["request"]["object"] = None
    write("delete", delete)


if __name__ == "__main__":
    main()
