//! Patch construction: the object is read, never changed; every change is an RFC 6902
//! operation whose path is built token by token with [`PointerBuf::from_tokens`], so that
//! `/` and `~` in annotation keys are escaped (`~1`, `~0`). Parent maps and arrays that are
//! missing are created by the operation that adds the first child.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::ops::{Mount, Patch, Val, pointer};
use super::reloader::{self, Decision};
use super::{
    CaFileKind, EnvBlock, InjectError, Injection, Outcome, SYSTEM_TRUST_PATHS, build_no_proxy,
};
use crate::api::reloader::{
    ANNOTATION_RELOAD_DEBOUNCE, ANNOTATION_RELOADER_SKIPPED, ENV_RELOADER_TARGET,
    RELOADER_CONTAINER,
};
use serde_json::json;

/// Annotation: the mcptrust version that injected the pod. Its presence marks the pod as
/// injected (a ValidatingAdmissionPolicy can require it); the injector is idempotent anyway.
pub const ANNOTATION_INJECTED: &str = "mcptrust.io/injected";
/// Annotation: sha256 (hex) of the mounted `ca-bundle.pem`.
pub const ANNOTATION_BUNDLE_SHA256: &str = "mcptrust.io/trust-bundle-sha256";
/// Annotation: the variables a container already set, which mcptrust left alone
/// (`container: NAME,NAME; other: NAME`).
pub const ANNOTATION_ENV_OVERRIDDEN: &str = "mcptrust.io/env-overridden";
/// Annotation: why containers (or the whole pod) were not injected.
pub const ANNOTATION_SKIPPED: &str = "mcptrust.io/skipped";
/// Annotation (set by users): comma-separated variable names that must not be injected.
pub const ANNOTATION_SKIP_ENV: &str = "mcptrust.io/skip-env";
/// Annotation (set by users): `"true"` mounts the bundle over the distro trust paths.
pub const ANNOTATION_OVERLAY: &str = "mcptrust.io/overlay-system-trust";
/// Annotation: the McpServer (`namespace/name`) whose settings were injected.
pub const ANNOTATION_MCPSERVER: &str = "mcptrust.io/mcpserver";
/// Label: `"false"` opts a pod (or workload) out; `"true"` opts it in where the namespace
/// has not.
pub const LABEL_INJECT: &str = "mcptrust.io/inject";

/// The JSON pointer tokens from an object of `kind` to its pod template (the object holding
/// `metadata` and `spec.containers`): empty for a Pod, `spec/template` for Deployment,
/// StatefulSet, DaemonSet, ReplicaSet, ReplicationController and Job, and
/// `spec/jobTemplate/spec/template` for CronJob. `None` for kinds mcptrust does not handle.
pub fn pod_template_pointer(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Pod" => Some(&[]),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => Some(&["spec", "template"]),
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }
}

fn malformed(what: &str, expected: &str) -> InjectError {
    InjectError::Malformed(format!("{what} must be {expected}"))
}

/// Reads an optional field that must be of one JSON type when present.
fn opt_object<'v>(
    v: &'v Value,
    key: &str,
    what: &str,
) -> Result<Option<&'v Map<String, Value>>, InjectError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(malformed(what, "an object")),
    }
}

fn opt_array<'v>(
    v: &'v Value,
    key: &str,
    what: &str,
) -> Result<Option<&'v Vec<Value>>, InjectError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(_) => Err(malformed(what, "an array")),
    }
}

fn str_map(m: Option<&Map<String, Value>>) -> BTreeMap<&str, &str> {
    m.map(|m| {
        m.iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k.as_str(), s)))
            .collect()
    })
    .unwrap_or_default()
}

/// The env block for `inj`, in injection order: CA variables, proxy variables in both
/// cases with identical values plus NODE_USE_ENV_PROXY=1 (only when a proxy is set),
/// JAVA_TOOL_OPTIONS ([`java_tool_options`]), then the extra env. HTTP_PROXY falls back to
/// the https proxy and vice versa, so that a fail-closed egress policy does not break
/// plain-http clients.
pub(crate) fn desired_env(inj: &Injection) -> Vec<(String, String)> {
    let mount = inj.mount_path.trim_end_matches('/');
    let mut env: Vec<(String, String)> = inj
        .ca_variables
        .iter()
        .map(|v| {
            let file = match v.file {
                CaFileKind::Bundle => super::BUNDLE_FILE,
                CaFileKind::PrivateOnly => super::CA_FILE,
            };
            (v.name.clone(), format!("{mount}/{file}"))
        })
        .collect();
    let p = &inj.proxy;
    if p.enabled() {
        let http = p.http_proxy.as_ref().or(p.https_proxy.as_ref());
        let https = p.https_proxy.as_ref().or(p.http_proxy.as_ref());
        if let Some(http) = http {
            env.push(("HTTP_PROXY".into(), http.clone()));
            env.push(("http_proxy".into(), http.clone()));
        }
        if let Some(https) = https {
            env.push(("HTTPS_PROXY".into(), https.clone()));
            env.push(("https_proxy".into(), https.clone()));
        }
        let no_proxy = build_no_proxy(p);
        env.push(("NO_PROXY".into(), no_proxy.clone()));
        env.push(("no_proxy".into(), no_proxy));
        env.push(("NODE_USE_ENV_PROXY".into(), "1".into()));
    }
    env.push((super::JAVA_TOOL_OPTIONS.into(), java_tool_options(inj)));
    for e in &inj.extra_env {
        env.retain(|(n, _)| n != &e.name);
        env.push((e.name.clone(), e.value.clone()));
    }
    env
}

/// The JAVA_TOOL_OPTIONS value for `inj`: a JVM reads neither SSL_CERT_FILE nor
/// HTTPS_PROXY, only system properties, so this carries
///
/// - `-Djavax.net.ssl.trustStore=<mount>/ca-bundle.p12`, `-Djavax.net.ssl.trustStoreType=PKCS12`
///   and `-Djavax.net.ssl.trustStorePassword=changeit` (the default SSLContext, hence
///   `HttpsURLConnection` and `java.net.http.HttpClient`, then trusts exactly the bundle:
///   system roots plus private CAs, like SSL_CERT_FILE);
/// - when a proxy is set, `-Dhttp.proxyHost/-Dhttp.proxyPort` from the http proxy and
///   `-Dhttps.proxyHost/-Dhttps.proxyPort` from the https proxy (host and port of the URL;
///   port 80 for `http://` and 443 for `https://` when absent; user info is dropped, since
///   Java takes no proxy credentials from properties), and `-Dhttp.nonProxyHosts` from
///   NO_PROXY translated by [`super::java_non_proxy_hosts`] (Java has no CIDRs).
///
/// The JVM splits the value at whitespace, so a mount path with spaces would break it.
pub fn java_tool_options(inj: &Injection) -> String {
    let mount = inj.mount_path.trim_end_matches('/');
    let mut opts = vec![
        format!(
            "-Djavax.net.ssl.trustStore={mount}/{}",
            super::TRUSTSTORE_FILE
        ),
        "-Djavax.net.ssl.trustStoreType=PKCS12".to_string(),
        format!(
            "-Djavax.net.ssl.trustStorePassword={}",
            super::TRUSTSTORE_PASSWORD
        ),
    ];
    let p = &inj.proxy;
    if p.enabled() {
        let http = p.http_proxy.as_ref().or(p.https_proxy.as_ref());
        let https = p.https_proxy.as_ref().or(p.http_proxy.as_ref());
        for (scheme, url) in [("http", http), ("https", https)] {
            if let Some((host, port)) = url.and_then(|u| proxy_host_port(u)) {
                opts.push(format!("-D{scheme}.proxyHost={host}"));
                opts.push(format!("-D{scheme}.proxyPort={port}"));
            }
        }
        let (hosts, _) = super::java_non_proxy_hosts(&build_no_proxy(p));
        if !hosts.is_empty() {
            opts.push(format!("-Dhttp.nonProxyHosts={hosts}"));
        }
    }
    opts.join(" ")
}

/// Host (IPv6 without brackets) and port of a proxy URL such as `http://10.200.0.1:3128`;
/// a URL without a scheme is read as `http://`. `None` when it does not parse.
fn proxy_host_port(url: &str) -> Option<(String, u16)> {
    let url = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    let uri: hyper::Uri = url.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    });
    Some((host.to_string(), port))
}

/// True when two absolute mount paths overlap (equal, or one is a directory above the
/// other), which would make one mount hide the other.
fn paths_overlap(a: &str, b: &str) -> bool {
    let a = a.trim_end_matches('/');
    let b = b.trim_end_matches('/');
    a == b
        || a.strip_prefix(b).is_some_and(|r| r.starts_with('/'))
        || b.strip_prefix(a).is_some_and(|r| r.starts_with('/'))
}

/// Computes the JSONPatch that injects `inj` into `object` (a Pod, or a Deployment,
/// StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job or CronJob).
///
/// Into every container and init container it adds the trust volume mount (read-only,
/// whole directory at `inj.mount_path`) and the env block ([`desired_env`]); into the pod
/// spec the ConfigMap volume; into the pod template's annotations
/// [`ANNOTATION_INJECTED`], [`ANNOTATION_BUNDLE_SHA256`] and, when they apply,
/// [`ANNOTATION_MCPSERVER`], [`super::ANNOTATION_EGRESS_MODE`], [`ANNOTATION_ENV_OVERRIDDEN`]
/// and [`ANNOTATION_SKIPPED`]. When `inj.reloader` is set (an McpServer with
/// `spec.rotation.strategy: Signal`), also the `mcptrust-reloader` native sidecar, appended
/// to `initContainers`, with `shareProcessNamespace: true` (when absent) and
/// `MCPTRUST_RELOADER_TARGET` in its target; or, when a pod cannot have it, the reason in
/// `mcptrust.io/reloader-skipped` and [`Outcome::skipped`], the pod otherwise injected as
/// usual (see `super::reloader::decide`).
///
/// Guarantees:
/// - a name the container already sets is never changed (it is recorded instead);
/// - a volume name or mount path the pod already uses for something else is never
///   clobbered: the pod (volume clash) or the container (mount clash) is skipped, with the
///   reason in [`ANNOTATION_SKIPPED`] and [`Outcome::skipped`];
/// - env is only pointed at files that are mounted ("mount before you point");
/// - applying the patch and injecting again yields an empty patch;
/// - kinds it does not handle, objects without a pod template, and objects labelled
///   `mcptrust.io/inject: "false"` get an empty patch.
///
/// # Errors
/// [`InjectError::Malformed`] when the object is not a JSON object or a field it reads has
/// the wrong JSON type (e.g. `spec.containers` is a string).
pub fn inject(object: &Value, inj: &Injection) -> Result<Outcome, InjectError> {
    inject_with_env(object, inj, &EnvBlock::new(inj))
}

/// [`inject`] with the env block of `inj` already computed ([`EnvBlock::new`]): a
/// [`Mutator`](super::Mutator) that answers many objects with the same settings computes
/// the block once and shares it, instead of once per object (it is a seventh of the
/// webhook's instructions per pod otherwise: the NO_PROXY list is normalised and the
/// JAVA_TOOL_OPTIONS built every time).
///
/// `env` must be `EnvBlock::new(inj)` or a clone of it; it only depends on
/// `inj.mount_path`, `inj.ca_variables`, `inj.proxy` and `inj.extra_env`.
///
/// # Errors
/// As [`inject`].
pub fn inject_with_env(
    object: &Value,
    inj: &Injection,
    env: &EnvBlock,
) -> Result<Outcome, InjectError> {
    if !object.is_object() {
        return Err(malformed("the object", "a JSON object"));
    }
    let kind = match object.get("kind") {
        Some(Value::String(k)) => k.as_str(),
        // Admission requests carry the kind; tolerate a bare pod manifest without it.
        None if object.pointer("/spec/containers").is_some() => "Pod",
        _ => return Ok(Outcome::default()),
    };
    let Some(base) = pod_template_pointer(kind) else {
        return Ok(Outcome::default());
    };
    let mut template = object;
    for t in base {
        match template.get(*t) {
            Some(v) if v.is_object() => template = v,
            Some(Value::Null) | None => return Ok(Outcome::default()),
            Some(_) => return Err(malformed(&format!("{kind} field {t}"), "an object")),
        }
    }
    let meta = opt_object(template, "metadata", "metadata")?;
    let spec = match template.get("spec") {
        Some(s @ Value::Object(_)) => s,
        None | Some(Value::Null) => return Ok(Outcome::default()),
        Some(_) => return Err(malformed("spec", "an object")),
    };

    // Opt-out label, on the pod template or on the workload itself.
    let labels = str_map(
        meta.and_then(|m| m.get("labels"))
            .and_then(Value::as_object),
    );
    let own_labels = str_map(
        object
            .pointer("/metadata/labels")
            .and_then(Value::as_object),
    );
    if labels.get(LABEL_INJECT) == Some(&"false") || own_labels.get(LABEL_INJECT) == Some(&"false")
    {
        return Ok(Outcome::default());
    }
    let annotations_obj = match meta {
        Some(m) => match m.get("annotations") {
            None | Some(Value::Null) => None,
            Some(Value::Object(a)) => Some(a),
            Some(_) => return Err(malformed("metadata.annotations", "an object")),
        },
        None => None,
    };
    let annotations = str_map(annotations_obj);
    let skip_env: Vec<&str> = annotations
        .get(ANNOTATION_SKIP_ENV)
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let overlay = inj.overlay_system_trust || annotations.get(ANNOTATION_OVERLAY) == Some(&"true");

    let mut ops = Patch::default();
    let mut skipped: Vec<String> = Vec::new();
    let mut overridden: Vec<String> = Vec::new();
    let mut injected_any = false;

    // The pod volume.
    let desired_volume = || Val::ConfigMapVolume {
        name: inj.volume_name.clone(),
        config_map: inj.config_map.clone(),
    };
    let volumes = opt_array(spec, "volumes", "spec.volumes")?;
    let existing_volume = volumes
        .into_iter()
        .flatten()
        .find(|v| v.get("name").and_then(Value::as_str) == Some(inj.volume_name.as_str()));
    let volume_ok = match existing_volume {
        None => {
            let spec_tokens = base.iter().copied().chain(["spec"]);
            if volumes.is_some() {
                ops.add(
                    pointer(spec_tokens.chain(["volumes", "-"])),
                    desired_volume(),
                );
            } else {
                ops.add(
                    pointer(spec_tokens.chain(["volumes"])),
                    Val::One(Box::new(desired_volume())),
                );
            }
            true
        }
        Some(v) => {
            let ours = v.pointer("/configMap/name").and_then(Value::as_str)
                == Some(inj.config_map.as_str());
            if !ours {
                skipped.push(format!(
                    "pod: volume {:?} already exists with another source; rename it or set mcptrust.io/inject=false",
                    inj.volume_name
                ));
            }
            ours
        }
    };

    // mTLS Secret volumes: one that clashes with a foreign volume is skipped alone.
    let mut tls: Vec<&super::TlsMount> = Vec::new();
    if volume_ok {
        for t in &inj.tls_mounts {
            let existing = volumes
                .into_iter()
                .flatten()
                .find(|v| v.get("name").and_then(Value::as_str) == Some(t.volume_name.as_str()));
            match existing {
                None => {
                    let vol = Val::SecretVolume {
                        name: t.volume_name.clone(),
                        secret_name: t.secret_name.clone(),
                    };
                    ops.add(
                        pointer(base.iter().copied().chain(["spec", "volumes", "-"])),
                        vol,
                    );
                    tls.push(t);
                }
                Some(v) if v.pointer("/secret/secretName").and_then(Value::as_str) == Some(t.secret_name.as_str()) => {
                    tls.push(t)
                }
                Some(_) => skipped.push(format!(
                    "pod: volume {:?} already exists with another source; the mTLS Secret {} is not mounted",
                    t.volume_name, t.secret_name
                )),
            }
        }
    }

    // The reloader sidecar (`spec.rotation.strategy: Signal`): decided before the
    // containers are patched, since its target gets one more variable.
    let server_tls = tls
        .iter()
        .copied()
        .find(|t| t.mount_path.trim_end_matches('/') == super::SERVER_TLS_MOUNT_PATH);
    let reloader = match &inj.reloader {
        None => None,
        Some(_) if !volume_ok => Some(Decision::Refused(format!(
            "the trust volume {:?} could not be injected (see {ANNOTATION_SKIPPED})",
            inj.volume_name
        ))),
        Some(plan) => {
            let mut watched = vec![inj.volume_name.as_str()];
            watched.extend(server_tls.map(|t| t.volume_name.as_str()));
            Some(reloader::decide(spec, plan, &watched))
        }
    };
    let target_index = match &reloader {
        Some(Decision::Inject { index, .. }) => Some(*index),
        _ => None,
    };
    let mut target_injected = false;

    let env = env.shared();
    let mount_path = inj.mount_path.trim_end_matches('/');
    if volume_ok {
        for list in ["initContainers", "containers"] {
            let Some(containers) = opt_array(spec, list, &format!("spec.{list}"))? else {
                continue;
            };
            for (i, c) in containers.iter().enumerate() {
                if !c.is_object() {
                    return Err(malformed(&format!("spec.{list}[{i}]"), "an object"));
                }
                let cname = c.get("name").and_then(Value::as_str).unwrap_or("?");
                // The injected sidecar mounts what it needs itself, and needs no env.
                if list == "initContainers" && cname == RELOADER_CONTAINER && reloader.is_some() {
                    continue;
                }
                let is_target = list == "containers" && target_index == Some(i);
                let idx = i.to_string();
                let ctoks = || base.iter().copied().chain(["spec", list, idx.as_str()]);
                let mounts =
                    opt_array(c, "volumeMounts", &format!("{list}[{cname}].volumeMounts"))?;
                // Mount clash: something else at or around our path.
                let mut have_mount = false;
                let mut clash = None;
                for m in mounts.into_iter().flatten() {
                    let mp = m.get("mountPath").and_then(Value::as_str).unwrap_or("");
                    let mn = m.get("name").and_then(Value::as_str).unwrap_or("");
                    if mn == inj.volume_name
                        && mp.trim_end_matches('/') == mount_path
                        && m.get("subPath").is_none()
                    {
                        have_mount = true;
                    } else if paths_overlap(mp, mount_path) {
                        clash = Some(format!(
                            "container {cname}: mount path {mp} (volume {mn}) overlaps {mount_path}; move it or set mcptrust.io/inject=false"
                        ));
                    }
                }
                if let Some(reason) = clash {
                    skipped.push(reason);
                    continue;
                }
                injected_any = true;
                let mut new_mounts: Vec<Mount> = Vec::new();
                if !have_mount {
                    new_mounts.push(Mount {
                        name: inj.volume_name.clone(),
                        mount_path: mount_path.to_owned(),
                        sub_path: None,
                    });
                }
                for t in &tls {
                    let path = t.mount_path.trim_end_matches('/');
                    let mut present = false;
                    let mut taken = None;
                    for m in mounts.into_iter().flatten() {
                        let mp = m.get("mountPath").and_then(Value::as_str).unwrap_or("");
                        let mn = m.get("name").and_then(Value::as_str).unwrap_or("");
                        if mn == t.volume_name && mp.trim_end_matches('/') == path {
                            present = true;
                        } else if paths_overlap(mp, path) {
                            taken = Some(mp.to_string());
                        }
                    }
                    if let Some(mp) = taken {
                        skipped.push(format!(
                            "container {cname}: mount path {mp} overlaps {path}; the mTLS Secret {} is not mounted there",
                            t.secret_name
                        ));
                    } else if !present {
                        new_mounts.push(Mount {
                            name: t.volume_name.clone(),
                            mount_path: path.to_owned(),
                            sub_path: None,
                        });
                    }
                }
                if overlay {
                    for path in SYSTEM_TRUST_PATHS {
                        let taken = mounts.into_iter().flatten().any(|m| {
                            m.get("mountPath")
                                .and_then(Value::as_str)
                                .map(|p| p.trim_end_matches('/'))
                                == Some(*path)
                        });
                        if !taken {
                            new_mounts.push(Mount {
                                name: inj.volume_name.clone(),
                                mount_path: (*path).to_owned(),
                                sub_path: Some(super::BUNDLE_FILE),
                            });
                        }
                    }
                }
                push_all(
                    &mut ops,
                    ctoks().chain(["volumeMounts"]),
                    mounts.is_some(),
                    new_mounts,
                    Val::Mount,
                    Val::Mounts,
                );

                let cenv = opt_array(c, "env", &format!("{list}[{cname}].env"))?;
                let mut new_env: Vec<usize> = Vec::new();
                let mut mine_overridden: Vec<&str> = Vec::new();
                for (index, (name, value)) in env.iter().enumerate() {
                    if skip_env.contains(&name.as_str()) {
                        continue;
                    }
                    let existing = cenv
                        .into_iter()
                        .flatten()
                        .find(|e| e.get("name").and_then(Value::as_str) == Some(name.as_str()));
                    match existing {
                        None => new_env.push(index),
                        Some(e)
                            if e.get("value").and_then(Value::as_str) == Some(value.as_str())
                                && e.get("valueFrom").is_none() => {}
                        Some(_) => mine_overridden.push(name),
                    }
                }
                if !mine_overridden.is_empty() {
                    overridden.push(format!("{cname}: {}", mine_overridden.join(",")));
                }
                let env_exists = cenv.is_some() || !new_env.is_empty();
                push_all(
                    &mut ops,
                    ctoks().chain(["env"]),
                    cenv.is_some(),
                    new_env,
                    Val::Env,
                    Val::Envs,
                );
                if is_target {
                    target_injected = true;
                    if let Some(Decision::Inject {
                        has_env: false,
                        name,
                        ..
                    }) = &reloader
                    {
                        let var = json!({"name": ENV_RELOADER_TARGET, "value": name});
                        push_json(&mut ops, ctoks().chain(["env"]), env_exists, var);
                    }
                }
            }
        }
    }

    // The sidecar itself, once its target has its mounts and variable.
    let reloader = match reloader {
        Some(Decision::Inject { name, .. }) if !target_injected => Some(Decision::Refused(
            format!("container {name} was not injected (see {ANNOTATION_SKIPPED})"),
        )),
        other => other,
    };
    let mut reloader_skipped: Option<String> = None;
    let mut remove_reloader_skipped = false;
    match (&reloader, &inj.reloader) {
        (
            Some(Decision::Inject {
                name,
                run_as_user,
                run_as_group,
                ..
            }),
            Some(plan),
        ) => {
            let debounce = annotations
                .get(ANNOTATION_RELOAD_DEBOUNCE)
                .and_then(|s| s.trim().parse::<u64>().ok());
            let container = reloader::sidecar(
                plan,
                name,
                (&inj.volume_name, mount_path),
                server_tls,
                debounce,
                *run_as_user,
                *run_as_group,
            );
            let spec_toks = || base.iter().copied().chain(["spec"]);
            let init_exists = opt_array(spec, "initContainers", "spec.initContainers")?.is_some();
            push_json(
                &mut ops,
                spec_toks().chain(["initContainers"]),
                init_exists,
                container,
            );
            if spec.get("shareProcessNamespace").is_none_or(Value::is_null) {
                ops.add(
                    pointer(spec_toks().chain(["shareProcessNamespace"])),
                    Val::Json(Box::new(Value::Bool(true))),
                );
            }
            // A reason left by an earlier admission of this template no longer holds.
            remove_reloader_skipped = annotations.contains_key(ANNOTATION_RELOADER_SKIPPED);
        }
        (Some(Decision::Refused(reason)), _) => reloader_skipped = Some(reason.clone()),
        _ => {}
    }

    // Annotations on the pod template.
    let mut tls_keys: Vec<(String, String)> = Vec::new();
    let mut want: Vec<(&str, String)> = Vec::new();
    if injected_any {
        want.push((ANNOTATION_INJECTED, crate::VERSION.to_string()));
        if let Some(sha) = &inj.bundle_sha256 {
            want.push((ANNOTATION_BUNDLE_SHA256, sha.clone()));
        }
        if let Some(server) = &inj.mcp_server {
            want.push((ANNOTATION_MCPSERVER, server.clone()));
        }
        if let Some(mode) = &inj.egress_mode {
            want.push((super::ANNOTATION_EGRESS_MODE, mode.clone()));
        }
        for t in &tls {
            if let Some(sha) = &t.sha256 {
                tls_keys.push((format!("sha256.mcptrust.io/{}", t.volume_name), sha.clone()));
            }
            if let Some(na) = &t.not_after {
                tls_keys.push((
                    format!("not-after.mcptrust.io/{}", t.volume_name),
                    na.clone(),
                ));
            }
        }
    }
    for (k, v) in &tls_keys {
        want.push((k.as_str(), v.clone()));
    }
    if !overridden.is_empty() {
        want.push((ANNOTATION_ENV_OVERRIDDEN, overridden.join("; ")));
    }
    if !skipped.is_empty() {
        want.push((ANNOTATION_SKIPPED, skipped.join("; ")));
    }
    // Only added: a reason already recorded stays, so that re-admissions do not flap.
    if let Some(reason) = &reloader_skipped
        && !annotations.contains_key(ANNOTATION_RELOADER_SKIPPED)
    {
        want.push((ANNOTATION_RELOADER_SKIPPED, reason.clone()));
    }
    let want: Vec<(&str, String)> = want
        .into_iter()
        .filter(|(k, v)| annotations.get(k) != Some(&v.as_str()))
        .collect();
    if remove_reloader_skipped {
        ops.remove(pointer(base.iter().copied().chain([
            "metadata",
            "annotations",
            ANNOTATION_RELOADER_SKIPPED,
        ])));
    }
    if !want.is_empty() {
        let meta_toks = || base.iter().copied().chain(["metadata"]);
        if meta.is_none() {
            ops.add(pointer(meta_toks()), Val::Metadata(Val::annotations(&want)));
        } else if annotations_obj.is_none() {
            ops.add(
                pointer(meta_toks().chain(["annotations"])),
                Val::Annotations(Val::annotations(&want)),
            );
        } else {
            for (k, v) in want {
                let path = pointer(meta_toks().chain(["annotations", k]));
                if annotations_obj.is_some_and(|a| a.contains_key(k)) {
                    ops.replace(path, Val::Str(v));
                } else {
                    ops.add(path, Val::Str(v));
                }
            }
        }
    }

    if let Some(reason) = reloader_skipped {
        skipped.push(format!("pod: no {RELOADER_CONTAINER} sidecar: {reason}"));
    }
    ops.set_env(env);
    Ok(Outcome {
        patch: ops,
        skipped,
    })
}

/// Appends `items` to the array at `tokens`: one `add` of the whole array (`all`) when it
/// does not exist yet, else one `add …/-` per item (`one`).
fn push_all<'a, T>(
    ops: &mut Patch,
    tokens: impl Iterator<Item = &'a str> + Clone,
    exists: bool,
    items: Vec<T>,
    one: impl Fn(T) -> Val,
    all: impl FnOnce(Vec<T>) -> Val,
) {
    if items.is_empty() {
        return;
    }
    if exists {
        for item in items {
            ops.add(pointer(tokens.clone().chain(["-"])), one(item));
        }
    } else {
        ops.add(pointer(tokens), all(items));
    }
}

/// Appends one JSON `item` to the array at `tokens` ([`push_all`] of one [`Val::Json`]).
fn push_json<'a>(
    ops: &mut Patch,
    tokens: impl Iterator<Item = &'a str> + Clone,
    exists: bool,
    item: Value,
) {
    push_all(
        ops,
        tokens,
        exists,
        vec![item],
        |v| Val::Json(Box::new(v)),
        |all| Val::Json(Box::new(Value::Array(all))),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::{InjectConfig, Injection};

    #[test]
    fn overlap() {
        assert!(paths_overlap("/etc/mcptrust", "/etc/mcptrust/trust"));
        assert!(paths_overlap("/etc/mcptrust/trust/", "/etc/mcptrust/trust"));
        assert!(paths_overlap(
            "/etc/mcptrust/trust/x",
            "/etc/mcptrust/trust"
        ));
        assert!(!paths_overlap(
            "/etc/mcptrust/trusted",
            "/etc/mcptrust/trust"
        ));
        assert!(!paths_overlap("/data", "/etc/mcptrust/trust"));
    }

    #[test]
    fn env_block_shapes() {
        let sandbox = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/sandbox-config.yaml");
        let text = std::fs::read_to_string(sandbox).expect("examples/sandbox-config.yaml");
        let cfg = InjectConfig::from_yaml(&text).expect("sandbox config");
        let inj = Injection::resolve(&cfg, None);
        let env = desired_env(&inj);
        let get = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(
            get("SSL_CERT_FILE"),
            Some("/etc/mcptrust/trust/ca-bundle.pem")
        );
        assert_eq!(
            get("NODE_EXTRA_CA_CERTS"),
            Some("/etc/mcptrust/trust/ca.pem")
        );
        assert_eq!(get("HTTPS_PROXY"), get("https_proxy"));
        assert_eq!(get("NO_PROXY"), get("no_proxy"));
        assert_eq!(get("NODE_USE_ENV_PROXY"), Some("1"));
        assert!(get("SSL_CERT_DIR").is_none());
        let mut want = [
            "-Djavax.net.ssl.trustStore=/etc/mcptrust/trust/ca-bundle.p12",
            "-Djavax.net.ssl.trustStoreType=PKCS12",
            "-Djavax.net.ssl.trustStorePassword=changeit",
            "-Dhttp.proxyHost=10.200.0.1",
            "-Dhttp.proxyPort=3128",
            "-Dhttps.proxyHost=10.200.0.1",
            "-Dhttps.proxyPort=3128",
        ]
        .join(" ");
        want.push_str(
            " -Dhttp.nonProxyHosts=localhost|127.0.0.1|[::1]|10.96.0.1|kubernetes|\
             kubernetes.default|*.svc|*.svc.cluster.local|*.cluster.local|",
        );
        let cidrs: Vec<String> = (96..112)
            .map(|b| format!("10.{b}.*"))
            .chain(["10.244.*".to_string()])
            .collect();
        want.push_str(&cidrs.join("|"));
        assert_eq!(get("JAVA_TOOL_OPTIONS"), Some(want.as_str()));
    }

    #[test]
    fn proxy_urls_give_host_and_port() {
        let cases = [
            ("http://10.200.0.1:3128", Some(("10.200.0.1", 3128))),
            (
                "http://user:pw@proxy.corp:8080/",
                Some(("proxy.corp", 8080)),
            ),
            ("proxy.corp:3128", Some(("proxy.corp", 3128))),
            ("http://proxy.corp", Some(("proxy.corp", 80))),
            ("https://proxy.corp", Some(("proxy.corp", 443))),
            ("http://[fd00::1]:3128", Some(("fd00::1", 3128))),
            ("http://", None),
        ];
        for (url, want) in cases {
            assert_eq!(
                proxy_host_port(url),
                want.map(|(h, p)| (h.to_string(), p)),
                "{url}"
            );
        }
    }

    #[test]
    fn no_proxy_env_without_proxy() {
        // The embedded default (what `mcptrust run` uses without --config) has no proxy.
        let cfg = InjectConfig::embedded_default();
        assert!(!cfg.proxy.enabled());
        let env = desired_env(&Injection::resolve(&cfg, None));
        assert!(
            env.iter()
                .all(|(k, _)| !k.to_ascii_uppercase().contains("PROXY"))
        );
        let java = env
            .iter()
            .find(|(k, _)| k == "JAVA_TOOL_OPTIONS")
            .map(|(_, v)| v.as_str());
        assert_eq!(
            java,
            Some(
                "-Djavax.net.ssl.trustStore=/etc/mcptrust/trust/ca-bundle.p12 \
                 -Djavax.net.ssl.trustStoreType=PKCS12 -Djavax.net.ssl.trustStorePassword=changeit"
            )
        );
    }
}
