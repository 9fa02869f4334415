//! mcptrust: makes TLS just work for MCP (Model Context Protocol) servers and the
//! sandboxes that run them.
//!
//! The crate is a library plus one binary (`mcptrust`). The library is split the way
//! the reconcile pipeline and the admission path are split:
//!
//! - [`api`]: the `McpServer` custom resource (`mcpservers.mcptrust.io`) and its status types;
//! - [`pki`]: trust-bundle assembly, PEM parsing and certificate fingerprints;
//! - [`inject`]: the pure Pod/pod-template → RFC 6902 JSONPatch injector, shared by the
//!   webhook and `mcptrust inject`;
//! - [`webhook`]: the axum admission server (AdmissionReview v1 over rustls);
//! - [`tls`]: a rustls `ServerConfig` whose certificate is hot-swapped on file change and SIGHUP;
//! - [`admin`] and [`metrics`]: the plain-HTTP `/livez`, `/readyz` and `/metrics` port;
//! - [`controller`]: the McpServer controller (bundles, certificates, endpoint probing,
//!   egress, rotation, status) and the webhook's cluster view;
//! - [`probe`]: endpoint diagnosis shared by `mcptrust probe` and the controller;
//! - [`reload`]: `mcptrust reload`, the sidecar that signals a server to reload its certificate;
//! - [`renew`]: `mcptrust renew`, a renewal requested through an annotation;
//! - [`operator`]: `mcptrust run`, wiring controller, webhook and admin port together;
//! - [`config`] and [`shutdown`]: the `--config` flag with its loading, and the shared
//!   SIGTERM/Ctrl-C stop, below both the operator and the command line;
//! - [`cli`] and [`telemetry`]: the command line (parse and dispatch only) and logging;
//! - [`report`]: one-line error reports (each cause once, the API server's URL and CA);
//! - [`docs`]: the generated reference docs (`docs/api.md`, the Helm values table).

#![warn(missing_docs)]

pub mod admin;
pub mod api;
pub mod cli;
pub mod config;
pub mod controller;
pub mod docs;
pub mod inject;
pub mod metrics;
pub mod operator;
pub mod pki;
pub mod probe;
pub mod reload;
pub mod renew;
pub mod report;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod webhook;

/// The version written into the `mcptrust.io/injected` annotation (the crate version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
