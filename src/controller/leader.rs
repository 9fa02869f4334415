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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    //! The elector against kube's mock service (tower-test): every request it makes is
    //! recorded and answered as the API server would, by a scenario closure; the Lease
    //! watch is answered with an empty list and a watch that never sends.

    use std::sync::{Arc, Mutex};

    use http::{Method, Request, Response, StatusCode};
    use kube::client::Body;
    use serde_json::Value;

    use super::*;

    /// What the elector asked.
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Ask {
        /// `GET` of the Lease.
        Get,
        /// `POST`: create.
        Create,
        /// `PATCH`: the apply, with its field manager and force flag.
        Apply,
    }

    /// One recorded request: what, the query, the body.
    type Record = (Ask, String, Value);
    type Log = Arc<Mutex<Vec<Record>>>;
    type Scenario = Box<dyn FnMut(&Ask, &Value) -> (StatusCode, Value) + Send>;

    const NS: &str = "ops";
    const NAME: &str = "lock";
    const T0: &str = "2026-01-01T00:00:00.000000Z";

    fn lease(holder: &str, renew: &str, rv: &str, transitions: i32) -> Value {
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": NAME, "namespace": NS, "resourceVersion": rv},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                     "acquireTime": T0, "renewTime": renew, "leaseTransitions": transitions},
        })
    }

    fn not_found() -> (StatusCode, Value) {
        (
            StatusCode::NOT_FOUND,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "reason": "NotFound", "code": 404, "message": "not found"}),
        )
    }

    fn conflict() -> (StatusCode, Value) {
        (
            StatusCode::CONFLICT,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict",
                   "code": 409, "message": "the object has been modified"}),
        )
    }

    fn unavailable() -> (StatusCode, Value) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "reason": "ServiceUnavailable", "code": 503, "message": "unreachable"}),
        )
    }

    /// The apply's echo: the body with a new resourceVersion.
    fn echo(body: &Value) -> (StatusCode, Value) {
        let mut out = body.clone();
        out["metadata"]["resourceVersion"] = json!("100");
        out["metadata"]["namespace"] = json!(NS);
        (StatusCode::OK, out)
    }

    /// An elector `me` on a mock API server answered by `scenario`; the log of its Lease
    /// requests (the watch's are answered, not logged).
    fn elector(me: &str, timings: Timings, mut scenario: Scenario) -> (Elector, Log) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let log: Log = Arc::default();
        let seen = log.clone();
        tokio::spawn(async move {
            let mut watches = Vec::new();
            while let Some((req, send)) = handle.next_request().await {
                let method = req.method().clone();
                let uri = req.uri().to_string();
                let (path, query) = uri.split_once('?').unwrap_or((uri.as_str(), ""));
                let bytes = req.into_body().collect_bytes().await.unwrap();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let collection = format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases");
                let respond = |(status, body): (StatusCode, Value)| {
                    Response::builder()
                        .status(status)
                        .body(Body::from(serde_json::to_vec(&body).unwrap()))
                        .unwrap()
                };
                if path == collection && method == Method::GET && query.contains("watch=true") {
                    watches.push(send); // never answered: a quiet watch
                    continue;
                }
                if path == collection && method == Method::GET {
                    send.send_response(respond((
                        StatusCode::OK,
                        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "LeaseList",
                               "metadata": {"resourceVersion": "1"}, "items": []}),
                    )));
                    continue;
                }
                let ask = match (&method, path) {
                    (&Method::GET, p) if p == format!("{collection}/{NAME}") => Ask::Get,
                    (&Method::POST, p) if p == collection => Ask::Create,
                    (&Method::PATCH, p) if p == format!("{collection}/{NAME}") => Ask::Apply,
                    _ => panic!("unexpected request {method} {uri}"),
                };
                let answer = scenario(&ask, &body);
                seen.lock().unwrap().push((ask, query.to_owned(), body));
                send.send_response(respond(answer));
            }
        });
        (Elector::new(client, NS, NAME, me, timings), log)
    }

    fn asks(log: &Log) -> Vec<Ask> {
        log.lock().unwrap().iter().map(|r| r.0.clone()).collect()
    }

    fn last(log: &Log, ask: Ask) -> Record {
        log.lock()
            .unwrap()
            .iter()
            .rev()
            .find(|r| r.0 == ask)
            .cloned()
            .unwrap_or_else(|| panic!("no {ask:?}"))
    }

    #[tokio::test]
    async fn a_missing_lease_is_created_held_by_this_identity() {
        let (e, log) = elector(
            "a",
            Timings::default(),
            Box::new(|ask, body| match ask {
                Ask::Get => not_found(),
                _ => (StatusCode::CREATED, body.clone()),
            }),
        );
        let mut observed = Observed::default();
        assert_eq!(
            e.try_acquire_or_renew(&mut observed).await.unwrap(),
            Attempt::Held
        );
        assert_eq!(asks(&log), [Ask::Get, Ask::Create]);
        let (_, _, body) = last(&log, Ask::Create);
        assert_eq!(body["spec"]["holderIdentity"], "a");
        assert_eq!(body["spec"]["leaseDurationSeconds"], 15);
        assert_eq!(body["spec"]["leaseTransitions"], 0);
    }

    #[tokio::test]
    async fn another_holders_claim_stands_until_this_process_saw_it_unchanged_for_a_term() {
        let (e, log) = elector(
            "a",
            Timings::default(),
            Box::new(|ask, body| match ask {
                // renewTime far in the past by the wall clock: expiry is judged by this
                // process's observation only, never by comparing clocks.
                Ask::Get => (StatusCode::OK, lease("b", T0, "7", 3)),
                _ => echo(body),
            }),
        );
        let mut observed = Observed::default();
        // First sight: the claim stands, nothing is written.
        assert_eq!(
            e.try_acquire_or_renew(&mut observed).await.unwrap(),
            Attempt::HeldByOther("b".into())
        );
        assert_eq!(asks(&log), [Ask::Get]);
        // Seen unchanged for less than the 15 s term: still standing.
        observed.at = Some(Instant::now() - Duration::from_secs(14));
        assert_eq!(
            e.try_acquire_or_renew(&mut observed).await.unwrap(),
            Attempt::HeldByOther("b".into())
        );
        assert_eq!(asks(&log), [Ask::Get, Ask::Get]);
        // Unchanged for longer than the term: expired, taken with an optimistic apply.
        observed.at = Some(Instant::now() - Duration::from_secs(16));
        assert_eq!(
            e.try_acquire_or_renew(&mut observed).await.unwrap(),
            Attempt::Held
        );
        assert_eq!(asks(&log), [Ask::Get, Ask::Get, Ask::Get, Ask::Apply]);
        let (_, query, body) = last(&log, Ask::Apply);
        assert!(
            query.contains("fieldManager=mcptrust-leader-election"),
            "{query}"
        );
        assert!(query.contains("force=true"), "{query}");
        assert_eq!(
            body["metadata"]["resourceVersion"], "7",
            "the Lease as read"
        );
        assert_eq!(body["spec"]["holderIdentity"], "a");
        assert_eq!(body["spec"]["leaseTransitions"], 4, "one more transition");
        assert_ne!(body["spec"]["acquireTime"], T0, "a new term");
    }

    #[tokio::test]
    async fn a_changed_record_restarts_the_observation() {
        let renew = Arc::new(Mutex::new("2026-01-01T00:00:01.000000Z"));
        let now = renew.clone();
        let (e, log) = elector(
            "a",
            Timings::default(),
            Box::new(move |ask, body| match ask {
                Ask::Get => (StatusCode::OK, lease("b", *now.lock().unwrap(), "7", 3)),
                _ => echo(body),
            }),
        );
        let mut observed = Observed::default();
        e.try_acquire_or_renew(&mut observed).await.unwrap();
        observed.at = Some(Instant::now() - Duration::from_secs(16));
        // The holder renewed meanwhile: its claim is fresh again.
        *renew.lock().unwrap() = "2026-01-01T00:00:03.000000Z";
        assert_eq!(
            e.try_acquire_or_renew(&mut observed).await.unwrap(),
            Attempt::HeldByOther("b".into())
        );
        assert!(observed.at.unwrap().elapsed() < Duration::from_secs(15));
        assert_eq!(asks(&log), [Ask::Get, Ask::Get]);
    }

    #[tokio::test]
    async fn a_released_lease_is_taken_at_once_and_a_renewal_keeps_the_term() {
        let (e, log) = elector(
            "a",
            Timings::default(),
            Box::new(|ask, body| match ask {
                Ask::Get => (StatusCode::OK, lease("", T0, "8", 5)),
                _ => echo(body),
            }),
        );
        let mut observed = Observed::default();
        assert_eq!(
            e.try_acquire_or_renew(&mut observed).await.unwrap(),
            Attempt::Held
        );
        let (_, _, body) = last(&log, Ask::Apply);
        assert_eq!(body["spec"]["leaseTransitions"], 6);

        // Its own Lease: renewed, the acquireTime and the transitions kept.
        let (e, log) = elector(
            "a",
            Timings::default(),
            Box::new(|ask, body| match ask {
                Ask::Get => (StatusCode::OK, lease("a", T0, "9", 6)),
                _ => echo(body),
            }),
        );
        assert_eq!(
            e.try_acquire_or_renew(&mut observed).await.unwrap(),
            Attempt::Held
        );
        let (_, _, body) = last(&log, Ask::Apply);
        assert_eq!(body["spec"]["acquireTime"], T0);
        assert_eq!(body["spec"]["leaseTransitions"], 6);
        assert_eq!(body["metadata"]["resourceVersion"], "9");
        assert_ne!(body["spec"]["renewTime"], T0);
    }

    #[tokio::test]
    async fn a_concurrent_acquire_loses_with_a_conflict_and_stands_by() {
        // Two candidates read the same released Lease; the API server takes the first
        // write and refuses the second (its resourceVersion is stale).
        let (e, log) = elector(
            "a",
            Timings::default(),
            Box::new(|ask, _| match ask {
                Ask::Get => (StatusCode::OK, lease("", T0, "8", 5)),
                _ => conflict(),
            }),
        );
        let mut observed = Observed::default();
        let err = e.try_acquire_or_renew(&mut observed).await.unwrap_err();
        assert!(
            matches!(&err, kube::Error::Api(s) if s.code == 409),
            "{err:?}"
        );
        assert_eq!(asks(&log), [Ask::Get, Ask::Apply]);
    }

    /// Timings short enough for a test that runs the whole loop.
    fn quick() -> Timings {
        Timings {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_millis(600),
            retry_period: Duration::from_millis(100),
        }
    }

    /// Runs `e` with a `lead` that records when it started and when it saw leadership
    /// end; returns the stop sender, the run task and the record.
    #[allow(clippy::type_complexity)]
    fn run(
        e: Elector,
    ) -> (
        watch::Sender<bool>,
        tokio::task::JoinHandle<()>,
        Arc<Mutex<Vec<(Instant, Option<Instant>)>>>,
    ) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let terms: Arc<Mutex<Vec<(Instant, Option<Instant>)>>> = Arc::default();
        let t = terms.clone();
        let task = tokio::spawn(async move {
            e.run(stop_rx, move |mut lost| {
                let t = t.clone();
                async move {
                    let i = {
                        let mut t = t.lock().unwrap();
                        t.push((Instant::now(), None));
                        t.len() - 1
                    };
                    let _ = lost.wait_for(|v| *v).await;
                    t.lock().unwrap()[i].1 = Some(Instant::now());
                }
            })
            .await;
        });
        (stop_tx, task, terms)
    }

    async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn the_leader_stops_leading_at_the_renew_deadline_when_the_api_is_unreachable() {
        let reachable = Arc::new(Mutex::new(true));
        let r = reachable.clone();
        let (e, log) = elector(
            "a",
            quick(),
            Box::new(move |ask, body| {
                if !*r.lock().unwrap() {
                    return unavailable();
                }
                match ask {
                    Ask::Get => (StatusCode::OK, lease("a", T0, "9", 1)),
                    _ => echo(body),
                }
            }),
        );
        let (stop, task, terms) = run(e);
        // Leading and renewing.
        eventually("two renewals", || {
            asks(&log).iter().filter(|a| **a == Ask::Apply).count() >= 2
        })
        .await;
        assert_eq!(terms.lock().unwrap().len(), 1);
        assert!(terms.lock().unwrap()[0].1.is_none(), "still leading");
        // Cut off: the last renewal is the last apply logged before the cut.
        *reachable.lock().unwrap() = false;
        let cut = Instant::now();
        eventually("the work told to stop", || {
            terms.lock().unwrap()[0].1.is_some()
        })
        .await;
        let ended = terms.lock().unwrap()[0].1.unwrap();
        // Not before the renew deadline (600 ms) since the last success, which came at
        // most one retry period (100 ms) before the cut.
        assert!(
            ended >= cut + Duration::from_millis(500),
            "stopped {:?} after the cut",
            ended - cut
        );
        // Back to standby: it keeps trying, and does not lead while unreachable.
        let tries = asks(&log).len();
        eventually("standby attempts", || asks(&log).len() > tries + 2).await;
        assert_eq!(terms.lock().unwrap().len(), 1, "no new term while cut off");
        // Reachable again, the Lease still its own: it leads again.
        *reachable.lock().unwrap() = true;
        eventually("a second term", || terms.lock().unwrap().len() == 2).await;
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn the_leader_stops_when_another_holder_took_the_lease() {
        let holder = Arc::new(Mutex::new("a"));
        let h = holder.clone();
        let (e, log) = elector(
            "a",
            quick(),
            Box::new(move |ask, body| match ask {
                Ask::Get => (StatusCode::OK, lease(*h.lock().unwrap(), T0, "9", 1)),
                _ => echo(body),
            }),
        );
        let (stop, task, terms) = run(e);
        eventually("leading", || terms.lock().unwrap().len() == 1).await;
        let applies = |log: &Log| asks(log).iter().filter(|a| **a == Ask::Apply).count();
        *holder.lock().unwrap() = "b";
        let before = applies(&log);
        eventually("the work told to stop", || {
            terms.lock().unwrap()[0].1.is_some()
        })
        .await;
        // Standing by now, it writes nothing over b's fresh claim.
        let gets = asks(&log).len();
        eventually("standby reads", || asks(&log).len() > gets + 2).await;
        assert!(applies(&log) <= before + 1, "{:?}", asks(&log));
        assert_eq!(terms.lock().unwrap().len(), 1);
        stop.send(true).unwrap();
        task.await.unwrap();
        // Not the holder: no release either.
        assert!(applies(&log) <= before + 1, "{:?}", asks(&log));
    }

    #[tokio::test]
    async fn a_clean_stop_ends_the_work_then_releases_the_lease() {
        let (e, log) = elector(
            "a",
            quick(),
            Box::new(|ask, body| match ask {
                Ask::Get => (StatusCode::OK, lease("a", T0, "9", 2)),
                _ => echo(body),
            }),
        );
        let (stop, task, terms) = run(e);
        eventually("leading", || terms.lock().unwrap().len() == 1).await;
        stop.send(true).unwrap();
        task.await.unwrap();
        assert!(
            terms.lock().unwrap()[0].1.is_some(),
            "the work was told to stop"
        );
        let (_, query, body) = last(&log, Ask::Apply);
        assert!(
            query.contains("fieldManager=mcptrust-leader-election"),
            "{query}"
        );
        assert_eq!(body["spec"]["holderIdentity"], "", "released");
        assert_eq!(body["spec"]["leaseDurationSeconds"], 1);
        assert_eq!(body["spec"]["leaseTransitions"], 2);
        assert_eq!(
            asks(&log).last(),
            Some(&Ask::Apply),
            "the release comes last"
        );
    }
}
