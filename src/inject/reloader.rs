//! The `mcptrust-reloader` sidecar of `spec.rotation.strategy: Signal`: which container
//! it serves, why a pod gets none, and the init container itself (a native sidecar,
//! `restartPolicy: Always`). The injector ([`super::inject`]) turns the decision into
//! patch operations.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::{ReloaderPlan, TlsMount};
use crate::api::reloader::{ENV_RELOADER_TARGET, RELOADER_CONTAINER, RELOADER_PORT_NAME};

/// What to do about the sidecar for one pod (template).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// The pod already has a container named [`RELOADER_CONTAINER`] in `initContainers`:
    /// nothing to add (the injector's idempotence).
    Present,
    /// Inject it for the container at `index` of `spec.containers`.
    Inject {
        /// The target's index in `spec.containers`.
        index: usize,
        /// The target's name.
        name: String,
        /// The target already has `MCPTRUST_RELOADER_TARGET=<name>` in its env.
        has_env: bool,
        /// `runAsUser` for the sidecar (the target's, else the pod's).
        run_as_user: Option<i64>,
        /// `runAsGroup` for the sidecar (the target's, else the pod's).
        run_as_group: Option<i64>,
    },
    /// No sidecar, for this reason (a sentence a person can act on).
    Refused(String),
}

fn security_context(v: &Value) -> Option<&Map<String, Value>> {
    v.get("securityContext").and_then(Value::as_object)
}

fn int(ctx: Option<&Map<String, Value>>, key: &str) -> Option<i64> {
    ctx.and_then(|c| c.get(key)).and_then(Value::as_i64)
}

fn flag(ctx: Option<&Map<String, Value>>, key: &str) -> Option<bool> {
    ctx.and_then(|c| c.get(key)).and_then(Value::as_bool)
}

/// Decides the sidecar for the pod spec `spec` (its containers, volumes and security
/// settings as received): the target is `plan.container`, or the pod's only container.
/// `mounts` are the volumes the sidecar will watch (the trust volume and, when the
/// McpServer has one, the server certificate's), by pod volume name.
///
/// Refused, with the reason, when: no image is configured; `shareProcessNamespace` is
/// false; `hostPID` is true; the target cannot be chosen (several containers and no
/// `spec.rotation.container`, or a name the pod lacks); the target mounts one of the
/// watched volumes with a `subPath` (kubelet never updates those); the target sets
/// `MCPTRUST_RELOADER_TARGET` to something else; or `runAsNonRoot` is true while neither
/// the target nor the pod sets `runAsUser` (the sidecar would run as the image's user,
/// not the target's).
pub(crate) fn decide(spec: &Value, plan: &ReloaderPlan, mounts: &[&str]) -> Decision {
    let init = spec.get("initContainers").and_then(Value::as_array);
    if init
        .into_iter()
        .flatten()
        .any(|c| c.get("name").and_then(Value::as_str) == Some(RELOADER_CONTAINER))
    {
        return Decision::Present;
    }
    if plan.config.image.as_deref().is_none_or(str::is_empty) {
        return Decision::Refused(
            "no reloader image is configured: set reloader.image in the operator config (the Helm chart sets its own image)"
                .to_owned(),
        );
    }
    if spec.get("shareProcessNamespace").and_then(Value::as_bool) == Some(false) {
        return Decision::Refused(
            "shareProcessNamespace is false: the reloader must see the server's processes to signal them; remove the field (or set it to true), or use spec.rotation.strategy RollingRestart"
                .to_owned(),
        );
    }
    if spec.get("hostPID").and_then(Value::as_bool) == Some(true) {
        return Decision::Refused(
            "hostPID is true: the reloader would see the node's processes; remove hostPID, or use spec.rotation.strategy RollingRestart"
                .to_owned(),
        );
    }
    let containers: Vec<&Value> = spec
        .get("containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let name_of = |c: &Value| {
        c.get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let (index, target) = match &plan.container {
        Some(want) => match containers.iter().position(|c| name_of(c) == *want) {
            Some(i) => (i, containers[i]),
            None => {
                let names: Vec<String> = containers.iter().map(|c| name_of(c)).collect();
                return Decision::Refused(format!(
                    "spec.rotation.container {want:?} is not a container of this pod (it has {}); fix the McpServer's spec.rotation.container",
                    names.join(", ")
                ));
            }
        },
        None => match containers.as_slice() {
            [only] => (0, *only),
            [] => return Decision::Refused("the pod has no containers".to_owned()),
            several => {
                let names: Vec<String> = several.iter().map(|c| name_of(c)).collect();
                return Decision::Refused(format!(
                    "the pod has several containers ({}) and the McpServer names none: set spec.rotation.container to the server's",
                    names.join(", ")
                ));
            }
        },
    };
    let name = name_of(target);
    for m in target
        .get("volumeMounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let volume = m.get("name").and_then(Value::as_str).unwrap_or("");
        if let Some(sub) = m.get("subPath").and_then(Value::as_str)
            && mounts.contains(&volume)
        {
            return Decision::Refused(format!(
                "container {name} mounts volume {volume} with subPath {sub}: kubelet never updates a subPath mount, so a reload would read the old files; mount the whole directory instead"
            ));
        }
    }
    let mut has_env = false;
    if let Some(e) = target
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(ENV_RELOADER_TARGET))
    {
        if e.get("value").and_then(Value::as_str) == Some(name.as_str())
            && e.get("valueFrom").is_none()
        {
            has_env = true;
        } else {
            return Decision::Refused(format!(
                "container {name} sets {ENV_RELOADER_TARGET} itself: the reloader finds the server's processes by {ENV_RELOADER_TARGET}={name}; remove it"
            ));
        }
    }
    let container_ctx = security_context(target);
    let pod_ctx = security_context(spec);
    let run_as_user = int(container_ctx, "runAsUser").or_else(|| int(pod_ctx, "runAsUser"));
    let run_as_group = int(container_ctx, "runAsGroup").or_else(|| int(pod_ctx, "runAsGroup"));
    let non_root = flag(container_ctx, "runAsNonRoot").or_else(|| flag(pod_ctx, "runAsNonRoot"));
    if run_as_user.is_none() && non_root == Some(true) {
        return Decision::Refused(format!(
            "runAsNonRoot is true but neither container {name} nor the pod sets runAsUser: the reloader runs as the server's user and would run as root, which kubelet refuses; set runAsUser (in the container's or the pod's securityContext)"
        ));
    }
    Decision::Inject {
        index,
        name,
        has_env,
        run_as_user,
        run_as_group,
    }
}

/// The sidecar init container: `mcptrust reload` watching `trust_dir` and, when the
/// McpServer has a server certificate, `server_tls` (its directory, also the `--cert` and
/// `--key` pair checked before each signal), signalling `target` as `plan` says; its
/// admin port named [`RELOADER_PORT_NAME`]; the same volumes read-only (whole
/// directories); the target's UID and GID, no capabilities, a read-only root filesystem
/// and the runtime's default seccomp profile. `debounce` is the pod's
/// `mcptrust.io/reload-debounce-seconds`, when it is a valid integer.
pub(crate) fn sidecar(
    plan: &ReloaderPlan,
    target: &str,
    (trust_volume, trust_dir): (&str, &str),
    server_tls: Option<&TlsMount>,
    debounce: Option<u64>,
    run_as_user: Option<i64>,
    run_as_group: Option<i64>,
) -> Value {
    let cfg = &plan.config;
    let mut args: Vec<String> = vec![
        "reload".into(),
        "--log-format".into(),
        "json".into(),
        "--watch".into(),
        trust_dir.into(),
    ];
    let mut mounts = vec![json!({"name": trust_volume, "mountPath": trust_dir, "readOnly": true})];
    if let Some(t) = server_tls {
        let dir = t.mount_path.trim_end_matches('/');
        args.extend([
            "--watch".into(),
            dir.into(),
            "--cert".into(),
            format!("{dir}/tls.crt"),
            "--key".into(),
            format!("{dir}/tls.key"),
        ]);
        mounts.push(json!({"name": t.volume_name, "mountPath": dir, "readOnly": true}));
    }
    args.extend([
        "--signal".into(),
        plan.signal.as_str().into(),
        "--container".into(),
        target.into(),
    ]);
    if let Some(re) = &plan.process_name {
        args.extend(["--process-name".into(), re.clone()]);
    }
    if plan.handles_signal {
        args.push("--handles-signal".into());
    }
    if let Some(n) = debounce {
        args.extend(["--debounce-seconds".into(), n.to_string()]);
    }
    args.extend(["--admin-addr".into(), format!("0.0.0.0:{}", cfg.admin_port)]);

    let mut security = json!({
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": true,
        "seccompProfile": {"type": "RuntimeDefault"},
    });
    if let Some(uid) = run_as_user {
        security["runAsUser"] = json!(uid);
        if uid != 0 {
            security["runAsNonRoot"] = json!(true);
        }
    }
    if let Some(gid) = run_as_group {
        security["runAsGroup"] = json!(gid);
    }
    let mut resources = Map::new();
    for (key, map) in [
        ("requests", &cfg.resources.requests),
        ("limits", &cfg.resources.limits),
    ] {
        if !map.is_empty() {
            resources.insert(key.into(), json!(map as &BTreeMap<String, String>));
        }
    }
    let mut container = json!({
        "name": RELOADER_CONTAINER,
        "image": cfg.image.clone().unwrap_or_default(),
        "restartPolicy": "Always",
        "args": args,
        "ports": [{"name": RELOADER_PORT_NAME, "containerPort": cfg.admin_port}],
        "securityContext": security,
        "volumeMounts": mounts,
    });
    if let Some(policy) = &cfg.image_pull_policy {
        container["imagePullPolicy"] = json!(policy);
    }
    if !resources.is_empty() {
        container["resources"] = Value::Object(resources);
    }
    container
}
