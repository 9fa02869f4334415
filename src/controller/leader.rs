//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's semantics
//! (`k8s.io/client-go/tools/leaderelection`): a 15 s lease, a 10 s renew deadline, a 2 s
//! retry period, expiry judged by this process's own clock from when it last saw the Lease
//! change (never by comparing `renewTime` with a skewed clock), and the Lease released on a
//! clean stop so that a standby takes over at once.
//!
//! A standby retries every retry period and also watches the Lease, so a release (holder
//! cleared) is acted on within milliseconds rather than at the next tick. kube-lease-manager,
//! used before, slept until the old term would have expired (14 to 17 s measured after a
//! release) and, with one field manager shared by every replica, could not detect a
//! concurrent acquire.
//!
//! Every write is a server-side apply with the field manager [`FIELD_MANAGER`], forced,
//! carrying `metadata.resourceVersion` of the Lease as last read: a concurrent writer makes
//! it fail with 409 Conflict (optimistic concurrency), so two replicas never both believe
//! they hold the Lease from a successful write.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::sync::watch;

/// Field manager of the Lease writes.
pub const FIELD_MANAGER: &str = "mcptrust-leader-election";

/// Timings, as client-go's `LeaderElectionConfig` (controller-runtime's defaults).
#[derive(Clone, Debug)]
pub struct Timings {
    /// How long a holder's claim stands without renewal (`leaseDurationSeconds`).
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up leading.
    pub renew_deadline: Duration,
    /// Interval between attempts, to acquire as a standby or to renew as the leader.
    pub retry_period: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// One elector: a Lease `name` in `namespace`, claimed as `identity`.
#[derive(Clone)]
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timings: Timings,
    api_server: crate::report::ApiServer,
}

/// What an attempt saw.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    /// This identity holds the Lease (acquired or renewed).
    Held,
    /// Another identity holds an unexpired claim.
    HeldByOther(String),
}

/// The last Lease record seen and when it was seen to change (client-go's
/// `observedRecord`/`observedTime`).
#[derive(Default)]
struct Observed {
    key: Option<(Option<String>, Option<String>, Option<i32>)>,
    at: Option<Instant>,
}

impl Elector {
    /// An elector for Lease `namespace/name` as `identity`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timings: Timings,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            timings,
            api_server: crate::report::ApiServer::default(),
        }
    }

    /// Names the API server (URL, CA) in the logs of failed attempts, e.g. `cannot reach
    /// the API server https://10.96.0.1:443: …`; without it they say `the API server`.
    #[must_use]
    pub fn with_api_server(mut self, api_server: crate::report::ApiServer) -> Self {
        self.api_server = api_server;
        self
    }

    /// One line for a failed attempt (see [`crate::report::ApiServer::describe`]).
    fn describe(&self, err: &kube::Error) -> String {
        if self.api_server.url.is_empty() {
            crate::report::one_line(err)
        } else {
            self.api_server.describe(err)
        }
    }

    /// Runs `lead` whenever this replica holds the Lease, until `stop` turns true; then
    /// stops the leader's work, waits for it and releases the Lease.
    ///
    /// `lead` is given a channel that turns true when leadership ends (lost, or stopping)
    /// and must return soon after. After a loss, the replica goes back to standby.
    pub async fn run<F, Fut>(&self, mut stop: watch::Receiver<bool>, lead: F)
    where
        F: Fn(watch::Receiver<bool>) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let mut observed = Observed::default();
        // Lease changes wake a standby at once (a release, a new holder).
        let mut changes = watcher(
            self.api.clone(),
            watcher::Config::default().fields(&format!("metadata.name={}", self.name)),
        )
        .default_backoff()
        .boxed();
        loop {
            // Standby: try now, then on every change of the Lease and every retry period.
            // Failures are logged with the server, the retry period and since when.
            let mut failing_since: Option<Instant> = None;
            loop {
                if *stop.borrow() {
                    return;
                }
                // A connect that hangs (a blackholed address) must not delay a stop.
                let attempt = tokio::select! {
                    a = self.try_acquire_or_renew(&mut observed) => a,
                    () = stopped(&mut stop) => return,
                };
                match attempt {
                    Ok(Attempt::Held) => break,
                    Ok(Attempt::HeldByOther(holder)) => {
                        failing_since = None;
                        tracing::debug!(%holder, "lease held by another replica");
                    }
                    Err(e) => {
                        let since = *failing_since.get_or_insert_with(Instant::now);
                        tracing::warn!(
                            "leader election: {}; retrying in {:?} (failing for {}s)",
                            self.describe(&e),
                            self.timings.retry_period,
                            since.elapsed().as_secs()
                        );
                    }
                }
                // Only a seen Lease wakes it early: the watch's errors and its `Init` marker
                // (yielded before each list attempt, which backs off on its own) would
                // otherwise make a second attempt at once after each failed one.
                tokio::select! {
                    _ = tokio::time::sleep(self.timings.retry_period) => {},
                    Some(Ok(
                        watcher::Event::Apply(_)
                        | watcher::Event::Delete(_)
                        | watcher::Event::InitApply(_)
                        | watcher::Event::InitDone,
                    )) = changes.next() => {},
                    () = stopped(&mut stop) => return,
                }
            }
            tracing::info!(identity = %self.identity, lease = %self.name, "acquired the lease");
            let (lost_tx, lost_rx) = watch::channel(false);
            let work = lead(lost_rx);
            tokio::pin!(work);
            let mut last_renewal = Instant::now();
            let mut work_done = false;
            let stopping = loop {
                tokio::select! {
                    // The work ended on its own (it only should when told to): go back
                    // through the standby loop, which finds this replica still holding
                    // the Lease and starts the work again.
                    () = &mut work, if !work_done => {
                        work_done = true;
                        tracing::warn!("the controllers stopped while leading: restarting them");
                        break false;
                    }
                    () = stopped(&mut stop) => break true,
                    _ = tokio::time::sleep(self.timings.retry_period) => {
                        match self.try_acquire_or_renew(&mut observed).await {
                            Ok(Attempt::Held) => last_renewal = Instant::now(),
                            Ok(Attempt::HeldByOther(holder)) => {
                                tracing::warn!(%holder, "the lease was taken over");
                                break false;
                            }
                            Err(e) if last_renewal.elapsed() < self.timings.renew_deadline => {
                                tracing::warn!("renewing the lease: {}", self.describe(&e));
                            }
                            Err(e) => {
                                tracing::warn!(
                                    "renew deadline passed ({}): giving up the lease",
                                    self.describe(&e)
                                );
                                break false;
                            }
                        }
                    }
                }
            };
            let _ = lost_tx.send(true);
            if !work_done {
                work.await;
            }
            if stopping {
                match self.release().await {
                    Ok(()) => tracing::info!(identity = %self.identity, "released the lease"),
                    Err(e) => tracing::warn!("releasing the lease: {e}"),
                }
                return;
            }
            tracing::warn!(identity = %self.identity, "lost the lease: controllers stopped");
        }
    }

    /// client-go's `tryAcquireOrRenew`: read the Lease (create it if missing); if another
    /// identity's claim has not expired by this process's observation, report it; else
    /// claim or renew with an optimistic-concurrency apply.
    async fn try_acquire_or_renew(&self, observed: &mut Observed) -> Result<Attempt, kube::Error> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let duration_secs = i32::try_from(self.timings.lease_duration.as_secs()).unwrap_or(15);
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            let lease: Lease = serde_json::from_value(json!({
                "metadata": { "name": self.name },
                "spec": {
                    "holderIdentity": self.identity,
                    "leaseDurationSeconds": duration_secs,
                    "acquireTime": now,
                    "renewTime": now,
                    "leaseTransitions": 0,
                }
            }))
            .map_err(kube::Error::SerdeError)?;
            self.api.create(&PostParams::default(), &lease).await?;
            *observed = Observed::default();
            return Ok(Attempt::Held);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let key = (
            holder.clone(),
            spec.renew_time.as_ref().map(|t| t.0.to_string()),
            spec.lease_duration_seconds,
        );
        if observed.key.as_ref() != Some(&key) {
            observed.key = Some(key);
            observed.at = Some(Instant::now());
        }
        let held_by_me = holder.as_deref() == Some(self.identity.as_str());
        if let Some(other) = holder.as_ref().filter(|_| !held_by_me) {
            let term = Duration::from_secs(
                u64::try_from(spec.lease_duration_seconds.unwrap_or(duration_secs)).unwrap_or(15),
            );
            let expired = observed.at.is_some_and(|at| at.elapsed() > term);
            if !expired {
                return Ok(Attempt::HeldByOther(other.clone()));
            }
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!held_by_me);
        let acquire = if held_by_me {
            spec.acquire_time.clone().unwrap_or(now.clone())
        } else {
            now.clone()
        };
        self.apply(
            &lease,
            json!({
                "holderIdentity": self.identity,
                "leaseDurationSeconds": duration_secs,
                "acquireTime": acquire,
                "renewTime": now,
                "leaseTransitions": transitions,
            }),
        )
        .await?;
        Ok(Attempt::Held)
    }

    /// Clears the holder (client-go's `ReleaseOnCancel`): `holderIdentity` empty and a
    /// one-second term, so that a standby takes over without waiting for expiry.
    async fn release(&self) -> Result<(), kube::Error> {
        let lease = self.api.get(&self.name).await?;
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        self.apply(
            &lease,
            json!({
                "holderIdentity": "",
                "leaseDurationSeconds": 1,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": spec.lease_transitions.unwrap_or(0),
            }),
        )
        .await
    }

    /// Writes `spec` to the Lease as last read: a forced server-side apply that carries its
    /// resourceVersion, so that it fails with 409 Conflict if anyone wrote in between.
    async fn apply(&self, read: &Lease, spec: serde_json::Value) -> Result<(), kube::Error> {
        let body = json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": { "name": self.name, "resourceVersion": read.metadata.resource_version },
            "spec": spec,
        });
        self.api
            .patch(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await?;
        Ok(())
    }
}

/// Resolves once `stop` is true (or its sender is gone), holding no guard across awaits.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|v| *v).await.map(|_| ());
}
