//! The attempt loop of one outbound request: each attempt goes to an endpoint from the route
//! decision, is classified, fed to outlier detection, and — within the retry policy, the retry
//! budget, the breaker's concurrent-retry limit and the deadline — retried after a jittered
//! backoff, preferably elsewhere. A retry's permit is held until the retried attempt is over, so
//! `max_concurrent_retries` bounds retries in flight, not backoff sleeps.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::time::{Duration, Instant};

use crate::classify::{self, Attempt, Class};
use crate::http::client_body::ClientBodyWatch;
use crate::http::replay::ReplayBody;
use crate::http::Body;
use crate::net::pool::peer::SendError;
use crate::resilience::backoff::full_jitter;
use crate::resilience::outlier::Verdict;
use crate::respond::ProxyError;
use crate::route::{self, Pick, Target};
use crate::state::endpoint::Endpoint;
use crate::state::policy::RetryConfig;
use crate::state::Service;
use crate::telemetry::metrics::ProxyMetrics;

/// The timer's resolution: a sleep ends on the next whole millisecond at the earliest.
const TIMER_TICK: Duration = Duration::from_millis(1);

/// What the loop needs to know about one request.
pub(crate) struct Plan<'a> {
    pub svc: &'a Service,
    pub target: &'a Target,
    pub retries: Option<&'a RetryConfig>,
    /// The method may be replayed (idempotent, or the route says `retryable`).
    pub replayable: bool,
    /// The request's deadline (route timeout and caller's budget, the earlier).
    pub deadline: Option<Instant>,
    /// What an expired `deadline` means: the caller's budget or the route's own timeout.
    pub expiry: ProxyError,
    /// Tells whether the caller's own body failed an attempt.
    pub client: ClientBodyWatch,
    /// The route's own split (empty: the service's).
    pub split: &'a [(String, u32)],
}

/// The body of each attempt: sent once, or kept for replay.
pub(crate) enum AttemptBody {
    Empty,
    Once(Option<Body>),
    Replay(ReplayBody),
}

impl AttemptBody {
    fn next(&mut self) -> Option<Body> {
        match self {
            AttemptBody::Empty => Some(crate::http::empty()),
            AttemptBody::Once(b) => b.take(),
            AttemptBody::Replay(r) => r.replay().map(ReplayBody::into_body),
        }
    }
    fn can_replay(&self) -> bool {
        match self {
            AttemptBody::Empty => true,
            AttemptBody::Once(_) => false,
            AttemptBody::Replay(r) => r.replay().is_some(),
        }
    }
}

/// The last attempt's answer, with the endpoint that gave it (a gRPC status at the end of its
/// stream is recorded against that endpoint then).
pub(crate) struct Answer<B> {
    pub response: http::Response<B>,
    pub endpoint: Arc<Endpoint>,
    pub class: Class,
}

/// Runs attempts until one is final. `send` makes one attempt: the endpoint picked, the body and
/// the attempt's deadline; it returns the outcome and the connection set-up time inside it.
pub(crate) async fn run<B, F, Fut>(
    plan: &Plan<'_>,
    mut body: AttemptBody,
    metrics: &ProxyMetrics,
    mut send: F,
) -> Result<Answer<B>, ProxyError>
where
    F: FnMut(&Pick, Body, Option<Instant>) -> Fut,
    Fut: Future<Output = (Attempt<B>, Duration)>,
{
    let svc = plan.svc;
    let breaker_cfg = svc.breaker_config();
    let mut attempt_no: u32 = 0;
    let mut avoid: Option<SocketAddr> = None;
    // Held from the decision to retry until the retried attempt is over.
    let mut retry_permit = None;
    loop {
        let now = Instant::now();
        if plan.deadline.is_some_and(|d| d <= now) {
            return Err(plan.expiry.clone());
        }
        let pick = route::pick(svc, plan.target, now, avoid, plan.split)
            .ok_or_else(|| ProxyError::NoEndpoints(svc.name.clone()))?;
        let per_try = plan.retries.and_then(|r| r.per_try_timeout).map(|t| now + t);
        let try_deadline = match (plan.deadline, per_try) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let Some(attempt_body) = body.next() else {
            // Not replayable (past the cap): unreachable, a retry checks first.
            return Err(ProxyError::Reset("request body could not be replayed".into()));
        };
        let in_flight = pick.endpoint.load.start();
        let sent = send(&pick, attempt_body, try_deadline);
        let (outcome, setup) = match try_deadline {
            Some(d) => tokio::time::timeout_at(d, sent).await.unwrap_or((Attempt::TimedOut, Duration::ZERO)),
            None => sent.await,
        };
        drop(retry_permit.take());
        // The caller's own body failed: its fault, not the endpoint's, and not worth a retry.
        if !matches!(outcome, Attempt::Response(_)) && plan.client.failed() {
            return Err(ProxyError::BadRequest("the request body from the client failed".into()));
        }
        let class = classify::classify(&outcome, pick.endpoint.identity.is_some());
        record(metrics, svc, &pick.endpoint, class);
        if matches!(outcome, Attempt::Response(_)) {
            in_flight.finish(setup);
        } else {
            drop(in_flight);
        }

        let give_up = |outcome: Attempt<B>| -> Result<Answer<B>, ProxyError> {
            match outcome {
                Attempt::Response(response) => Ok(Answer { response, endpoint: pick.endpoint.clone(), class }),
                Attempt::TimedOut => Err(if plan.deadline.is_some_and(|d| d <= Instant::now()) {
                    plan.expiry.clone()
                } else {
                    ProxyError::Timeout
                }),
                Attempt::Failed(SendError::Connect(e)) => Err(ProxyError::ConnectFailed(e)),
                Attempt::Failed(SendError::Refused) => Err(ProxyError::Reset("stream refused".into())),
                Attempt::Failed(SendError::Reset(e)) => Err(ProxyError::Reset(e)),
            }
        };
        let Some(rc) = plan.retries else { return give_up(outcome) };
        let Some(reason) = classify::retry_reason(&rc.on, &outcome, class) else { return give_up(outcome) };
        if attempt_no >= rc.max_retries
            || !(classify::never_reached_app(&outcome, class) || plan.replayable)
            || !body.can_replay()
        {
            return give_up(outcome);
        }
        let backoff = full_jitter(rc.backoff_base, rc.backoff_max, attempt_no, rand::random::<f64>());
        // Timers fire on whole milliseconds, rounded up: a backoff ending within one of the
        // deadline would wake at it and turn the answer in hand into a timeout.
        if plan.deadline.is_some_and(|d| Instant::now() + backoff + TIMER_TICK >= d) {
            return give_up(outcome);
        }
        let Ok(permit) = svc.runtime.breaker.try_retry(&breaker_cfg) else {
            metrics.breaker_rejections.with(&[&svc.name, &svc.namespace, "retries"]).inc();
            return give_up(outcome);
        };
        if !svc.runtime.budget.try_withdraw(&rc.budget, Instant::now()) {
            metrics.retry_budget_exhausted.with(&[&svc.name, &svc.namespace]).inc();
            return give_up(outcome);
        }
        metrics.retries.with(&[&svc.name, &svc.namespace, reason]).inc();
        retry_permit = Some(permit);
        drop(outcome);
        if !backoff.is_zero() {
            tokio::time::sleep(backoff).await;
        }
        attempt_no += 1;
        avoid = Some(pick.endpoint.addr);
    }
}

/// Feeds one classified outcome into the endpoint's outlier state (and the ejection metrics).
pub(crate) fn record(metrics: &ProxyMetrics, svc: &Service, ep: &Endpoint, class: Class) {
    match class {
        Class::Failure => {
            let cfg = svc.breaker_config().outlier;
            let now = Instant::now();
            let total = svc.endpoints.len().max(1);
            let may_eject = (svc.ejected(now) + 1) * 100 <= cfg.max_ejected_percent as usize * total;
            if let Verdict::Ejected(d) = ep.outlier.on_failure(&cfg, now, may_eject) {
                metrics.endpoint_ejections.with(&[&svc.name, &svc.namespace]).inc();
                tracing::warn!(
                    service = %svc.name, endpoint = %ep.addr, seconds = d.as_secs_f64(),
                    "endpoint ejected after consecutive failures"
                );
            }
            metrics.endpoints_ejected.with(&[&svc.name, &svc.namespace]).set(svc.ejected(now) as i64);
        }
        Class::Success => ep.outlier.on_success(),
        Class::Neutral | Class::AtEndOfStream => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    use weft_proto::types;
    use weft_proto::v1 as pb;

    /// bar with `n` endpoints and this retry policy; `max_concurrent_retries` as given.
    fn bar(n: usize, retries: Option<pb::RetryPolicy>, max_concurrent_retries: u32) -> Arc<Service> {
        let policy = pb::ServicePolicy {
            name: "bar".into(),
            namespace: "default".into(),
            default_route: Some(pb::RoutePolicy { retries, ..Default::default() }),
            circuit_breaker: Some(pb::CircuitBreaker {
                max_concurrent_retries,
                ..weft_proto::defaults::circuit_breaker()
            }),
            ..Default::default()
        };
        let eps = pb::EndpointSet {
            endpoints: (0..n)
                .map(|i| pb::Endpoint {
                    address: format!("10.0.0.{}:4143", i + 2),
                    identity: "spiffe://weft.local/ns/default/sa/bar".into(),
                    instance: format!("bar-{i}"),
                    app_ports: vec![8080],
                    ..Default::default()
                })
                .collect(),
        };
        let resp = |t: &str, body| pb::DiscoveryResponse {
            type_url: t.into(),
            resources: vec![pb::Resource { name: "default/bar".into(), version: "1".into(), body: Some(body) }],
            ..Default::default()
        };
        let snap = crate::state::Snapshot::default()
            .apply(&resp(types::SERVICE, pb::resource::Body::Service(policy)))
            .0
            .apply(&resp(types::ENDPOINTS, pb::resource::Body::Endpoints(eps)))
            .0;
        snap.service("default/bar").cloned().unwrap()
    }

    fn retries(max: u32, base_ms: u64) -> pb::RetryPolicy {
        pb::RetryPolicy {
            on: vec!["5xx".into(), "connect-failure".into()],
            max_retries: max,
            backoff_base_ms: base_ms,
            backoff_max_ms: base_ms,
            budget: Some(pb::RetryBudget { ratio: 0.0, min_per_second: 1000, window_ms: 10_000 }),
            ..Default::default()
        }
    }

    fn target(metrics: &ProxyMetrics) -> Target {
        Target::new(metrics, "default/bar".into(), None, None)
    }

    fn plan<'a>(svc: &'a Service, target: &'a Target, deadline: Option<Instant>) -> Plan<'a> {
        Plan {
            svc,
            target,
            retries: svc.policy.as_ref().and_then(|p| p.default_route.retries.as_ref()),
            replayable: true,
            deadline,
            expiry: ProxyError::DeadlineExceeded,
            client: ClientBodyWatch::default(),
            split: &[],
        }
    }

    fn status(code: u16) -> Attempt<()> {
        Attempt::Response(http::Response::builder().status(code).body(()).unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_retried_elsewhere_until_an_answer_and_counted() {
        let metrics = ProxyMetrics::new();
        let svc = bar(3, Some(retries(2, 25)), 3);
        let t = target(&metrics);
        let tried = Mutex::new(Vec::new());
        let answer = run(&plan(&svc, &t, None), AttemptBody::Empty, &metrics, |pick, _, _| {
            tried.lock().unwrap().push(pick.endpoint.addr);
            let n = tried.lock().unwrap().len();
            async move { (if n < 3 { status(503) } else { status(200) }, Duration::ZERO) }
        })
        .await
        .unwrap();
        assert_eq!(answer.response.status(), 200);
        let tried = tried.into_inner().unwrap();
        assert_eq!(tried.len(), 3);
        assert!(tried.windows(2).all(|w| w[0] != w[1]), "each retry went elsewhere: {tried:?}");
        assert!(metrics
            .registry
            .render()
            .contains("weft_retries_total{service=\"bar\",namespace=\"default\",reason=\"5xx\"} 2"));
    }

    #[tokio::test(start_paused = true)]
    async fn no_retry_starts_when_its_backoff_would_outlive_the_deadline() {
        let metrics = ProxyMetrics::new();
        let svc = bar(2, Some(retries(5, 300)), 3);
        let t = target(&metrics);
        let attempts = AtomicU32::new(0);
        let deadline = Instant::now() + Duration::from_millis(500);
        let started = Instant::now();
        let answer = run(&plan(&svc, &t, Some(deadline)), AttemptBody::Empty, &metrics, |_, _, _| {
            attempts.fetch_add(1, Ordering::SeqCst);
            async { (status(503), Duration::ZERO) }
        })
        .await
        .unwrap();
        // Full jitter: each backoff is in [0, 300 ms], so how many fit is random; what holds is
        // that none ends past the deadline, and the last answer is returned rather than a timeout.
        assert_eq!(answer.response.status(), 503);
        assert!(Instant::now() < deadline, "waited {:?}", started.elapsed());
        assert!((1..=6).contains(&attempts.load(Ordering::SeqCst)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_holds_its_permit_until_the_retried_attempt_is_over() {
        let metrics = ProxyMetrics::new();
        // One concurrent retry at most.
        let svc = bar(2, Some(retries(1, 1)), 1);
        let t = target(&metrics);
        let (a, b) = (plan(&svc, &t, None), plan(&svc, &t, None));
        // Request A fails at once, then its retry takes 10 s. Request B fails at 1 s, while A's
        // retry is in flight: B's retry must be refused by the breaker.
        let slow_retry = |delay_first: u64| {
            let n = AtomicU32::new(0);
            move |_: &Pick, _: Body, _: Option<Instant>| {
                let first = n.fetch_add(1, Ordering::SeqCst) == 0;
                async move {
                    if first {
                        tokio::time::sleep(Duration::from_millis(delay_first)).await;
                        (status(503), Duration::ZERO)
                    } else {
                        tokio::time::sleep(Duration::from_secs(10)).await;
                        (status(200), Duration::ZERO)
                    }
                }
            }
        };
        let (ra, rb) = tokio::join!(
            run(&a, AttemptBody::Empty, &metrics, slow_retry(0)),
            run(&b, AttemptBody::Empty, &metrics, slow_retry(1000)),
        );
        assert_eq!(ra.unwrap().response.status(), 200, "A retried");
        assert_eq!(rb.unwrap().response.status(), 503, "B's retry was refused while A's was in flight");
        assert!(metrics.registry.render().contains(
            "weft_circuit_breaker_rejections_total{service=\"bar\",namespace=\"default\",reason=\"retries\"} 1"
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_refuses_retries_once_spent() {
        let metrics = ProxyMetrics::new();
        let mut r = retries(1, 1);
        r.budget = Some(pb::RetryBudget { ratio: 0.0, min_per_second: 1, window_ms: 1000 });
        let svc = bar(2, Some(r), 10);
        let t = target(&metrics);
        let mut statuses = Vec::new();
        for _ in 0..3 {
            let answer = run(&plan(&svc, &t, None), AttemptBody::Empty, &metrics, |_, _, _| async {
                (status(503), Duration::ZERO)
            })
            .await
            .unwrap();
            statuses.push(answer.response.status().as_u16());
        }
        assert!(metrics
            .registry
            .render()
            .contains("weft_retry_budget_exhausted_total{service=\"bar\",namespace=\"default\"} 2"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_past_the_replay_cap_is_not_retried_and_a_post_only_when_it_never_arrived() {
        let metrics = ProxyMetrics::new();
        let svc = bar(2, Some(retries(2, 1)), 3);
        let t = target(&metrics);
        // A one-shot body: no retry, whatever the answer.
        let attempts = AtomicU32::new(0);
        let once = AttemptBody::Once(Some(crate::http::full("x")));
        let answer = run(&plan(&svc, &t, None), once, &metrics, |_, _, _| {
            attempts.fetch_add(1, Ordering::SeqCst);
            async { (status(503), Duration::ZERO) }
        })
        .await
        .unwrap();
        assert_eq!((answer.response.status().as_u16(), attempts.load(Ordering::SeqCst)), (503, 1));
        // A POST (not replayable) is retried after a connect failure, never after a 503.
        let mut post = plan(&svc, &t, None);
        post.replayable = false;
        let n = AtomicU32::new(0);
        let answer = run(&post, AttemptBody::Empty, &metrics, |_, _, _| {
            let first = n.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                if first {
                    (Attempt::Failed(SendError::Connect("refused".into())), Duration::ZERO)
                } else {
                    (status(503), Duration::ZERO)
                }
            }
        })
        .await
        .unwrap();
        assert_eq!((answer.response.status().as_u16(), n.load(Ordering::SeqCst)), (503, 2));
    }
}
