//! Scheduler and transition tests under paused time with a scripted prober, plus one end-to-end
//! run against a real HTTP server.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::time::{Instant, sleep, sleep_until};

use super::*;
use crate::health::probe::ProbeFuture;
use crate::health::test_support::{HttpServer, HttpServerBehaviour};
use elb_contract::{DESCRIPTION_FAILED, InstanceState, ReasonCode};

/// tokio's timer wheel has millisecond resolution, so instants it wakes at may be rounded up by
/// less than this.
const TICK: Duration = Duration::from_millis(1);
const SCRIPTED_LATENCY: Duration = Duration::from_millis(10);

struct ProbeRecord {
    ip: IpAddr,
    start: Instant,
    /// `None` while the probe runs.
    end: Option<Instant>,
}

/// Passes unless its address is marked failing; takes `latency` of (virtual) time.
struct ScriptedProber {
    failing: Mutex<HashSet<IpAddr>>,
    latency: Mutex<Duration>,
    log: Mutex<Vec<ProbeRecord>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl ScriptedProber {
    fn new(latency: Duration) -> Arc<Self> {
        Arc::new(Self {
            failing: Mutex::default(),
            latency: Mutex::new(latency),
            log: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        })
    }

    fn set_failing(&self, ip: IpAddr, failing: bool) {
        let mut set = self.failing.lock().unwrap();
        if failing {
            set.insert(ip);
        } else {
            set.remove(&ip);
        }
    }

    fn starts(&self, ip: IpAddr) -> Vec<Instant> {
        let log = self.log.lock().unwrap();
        log.iter().filter(|r| r.ip == ip).map(|r| r.start).collect()
    }

    /// `(start, end)` of the finished probes of `ip`.
    fn finished(&self, ip: IpAddr) -> Vec<(Instant, Instant)> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|r| r.ip == ip)
            .filter_map(|r| Some((r.start, r.end?)))
            .collect()
    }

    fn first_starts(&self) -> HashMap<IpAddr, Instant> {
        let mut first = HashMap::new();
        for r in self.log.lock().unwrap().iter() {
            first
                .entry(r.ip)
                .and_modify(|t: &mut Instant| *t = (*t).min(r.start))
                .or_insert(r.start);
        }
        first
    }

    fn total(&self) -> usize {
        self.log.lock().unwrap().len()
    }
}

impl Prober for ScriptedProber {
    fn probe<'a>(
        &'a self,
        _target: &'a HealthTarget,
        ip: IpAddr,
        _timeout: Duration,
    ) -> ProbeFuture<'a> {
        Box::pin(async move {
            let start = Instant::now();
            let now_in_flight = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight
                .fetch_max(now_in_flight, Ordering::SeqCst);
            let latency = *self.latency.lock().unwrap();
            let index = {
                let mut log = self.log.lock().unwrap();
                log.push(ProbeRecord {
                    ip,
                    start,
                    end: None,
                });
                log.len() - 1
            };
            sleep(latency).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            let passed = !self.failing.lock().unwrap().contains(&ip);
            self.log.lock().unwrap()[index].end = Some(Instant::now());
            ProbeOutcome {
                passed,
                latency,
                detail: if passed { "ok" } else { "scripted failure" }.to_owned(),
            }
        })
    }
}

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
}

fn cfg(interval: u32, unhealthy: u32, healthy: u32) -> HealthCheck {
    HealthCheck {
        target: "TCP:80".parse().unwrap(),
        interval,
        timeout: 2,
        unhealthy_threshold: unhealthy,
        healthy_threshold: healthy,
    }
}

fn options(jitter: bool) -> HealthCheckerOptions {
    HealthCheckerOptions {
        first_probe_jitter: jitter,
        ..HealthCheckerOptions::default()
    }
}

fn start_checker(
    prober: &Arc<ScriptedProber>,
    options: HealthCheckerOptions,
) -> (HealthChecker<u32>, mpsc::Receiver<HealthEvent<u32>>) {
    let (tx, rx) = mpsc::channel(64);
    let checker = HealthChecker::spawn_with_prober(tx, options, prober.clone());
    (checker, rx)
}

fn assert_near(actual: Duration, expected: Duration) {
    assert!(
        actual >= expected && actual <= expected + TICK,
        "expected {expected:?} (+1 ms), got {actual:?}"
    );
}

fn offsets(t0: Instant, instants: &[Instant]) -> Vec<Duration> {
    instants.iter().map(|t| *t - t0).collect()
}

#[tokio::test(start_paused = true)]
async fn probes_of_one_target_are_one_interval_apart() {
    let prober = ScriptedProber::new(Duration::from_secs(1));
    let (checker, _events) = start_checker(&prober, options(false));
    let t0 = Instant::now();
    checker.upsert(1, ip(1), cfg(5, 2, 2)).unwrap();
    sleep_until(t0 + Duration::from_secs(27)).await;

    let starts = prober.starts(ip(1));
    assert_eq!(starts.len(), 6, "{:?}", offsets(t0, &starts));
    assert_near(starts[0] - t0, Duration::ZERO);
    for pair in starts.windows(2) {
        // Start to start, not end to start: the 1 s probe does not stretch the period.
        assert_near(pair[1] - pair[0], Duration::from_secs(5));
    }

    let latency = checker.latency_histogram().snapshot();
    assert_eq!(latency.count, 6);
    let at = |bound: f64| latency.buckets.iter().find(|b| b.0 == bound).unwrap().1;
    assert_eq!((at(0.5), at(1.0)), (0, 6));
    assert_eq!(
        checker.get(&1).unwrap().last_probe.unwrap().latency,
        Duration::from_secs(1)
    );
}

#[tokio::test(start_paused = true)]
async fn a_probe_longer_than_the_interval_delays_the_next_instead_of_overlapping() {
    let prober = ScriptedProber::new(Duration::from_secs(7));
    let (checker, _events) = start_checker(&prober, options(false));
    let t0 = Instant::now();
    checker.upsert(1, ip(1), cfg(5, 2, 2)).unwrap();
    sleep_until(t0 + Duration::from_secs(40)).await;

    let records = prober.finished(ip(1));
    // Starts at 0, 7, 14, 21, 28, 35.
    assert_eq!(
        records.len(),
        5,
        "the probe started at 35 s is still running"
    );
    assert_eq!(prober.max_in_flight.load(Ordering::SeqCst), 1);
    for pair in records.windows(2) {
        let (previous_end, next_start) = (pair[0].1, pair[1].0);
        assert!(next_start >= previous_end, "overlap");
        assert_near(next_start - previous_end, Duration::ZERO);
    }
    assert_eq!(prober.starts(ip(1)).len(), 6);
}

#[tokio::test(start_paused = true)]
async fn first_probes_of_a_thousand_targets_spread_over_the_interval() {
    const TARGETS: u32 = 1000;
    let interval = Duration::from_secs(30);
    let prober = ScriptedProber::new(SCRIPTED_LATENCY);
    let (checker, _events) = start_checker(&prober, options(true));
    let t0 = Instant::now();
    for n in 0..TARGETS {
        checker.upsert(n, ip(n), cfg(30, 2, 2)).unwrap();
    }
    sleep_until(t0 + Duration::from_secs(61)).await;

    let first = prober.first_starts();
    assert_eq!(first.len(), TARGETS as usize, "every target probed");
    let mut buckets = [0u32; 10];
    let mut per_millisecond: HashMap<u128, u32> = HashMap::new();
    for start in first.values() {
        let offset = *start - t0;
        // Jitter is drawn from [0, Interval); the timer may round it up by under a tick.
        assert!(
            offset < interval + TICK,
            "first probe after one Interval: {offset:?}"
        );
        let bucket = usize::try_from(offset.as_millis() / 3000).unwrap().min(9);
        buckets[bucket] += 1;
        *per_millisecond.entry(offset.as_millis()).or_default() += 1;
    }
    // Uniform: 100 expected per 3 s slice; 50..=150 is more than 5 standard deviations wide.
    assert!(
        buckets.iter().all(|&n| (50..=150).contains(&n)),
        "first probes per 3 s slice: {buckets:?}"
    );
    let busiest = per_millisecond.values().max().copied().unwrap_or_default();
    assert!(
        busiest <= 10,
        "{busiest} first probes in the same millisecond"
    );

    // After the jittered start, each target keeps its own Interval cadence.
    for n in [0, 499, 999] {
        let starts = prober.starts(ip(n));
        assert!(starts.len() >= 2, "target {n}: {:?}", offsets(t0, &starts));
        assert_near(starts[1] - starts[0], interval);
    }
}

#[tokio::test(start_paused = true)]
async fn without_jitter_first_probes_are_immediate() {
    let prober = ScriptedProber::new(SCRIPTED_LATENCY);
    let (checker, _events) = start_checker(
        &prober,
        HealthCheckerOptions {
            max_concurrent_probes: 1000,
            ..options(false)
        },
    );
    let t0 = Instant::now();
    for n in 0..1000 {
        checker.upsert(n, ip(n), cfg(30, 2, 2)).unwrap();
    }
    sleep_until(t0 + Duration::from_secs(1)).await;
    let first = prober.first_starts();
    assert_eq!(first.len(), 1000);
    assert!(first.values().all(|t| *t == t0));
}

#[tokio::test(start_paused = true)]
async fn concurrent_probes_are_bounded() {
    let prober = ScriptedProber::new(Duration::from_secs(1));
    let (checker, _events) = start_checker(
        &prober,
        HealthCheckerOptions {
            max_concurrent_probes: 10,
            ..options(false)
        },
    );
    let t0 = Instant::now();
    for n in 0..100 {
        checker.upsert(n, ip(n), cfg(30, 2, 2)).unwrap();
    }
    sleep_until(t0 + Duration::from_millis(10_500)).await;
    assert_eq!(prober.max_in_flight.load(Ordering::SeqCst), 10);
    assert_eq!(prober.total(), 100, "ten waves of ten one-second probes");
    assert!(prober.first_starts().len() == 100);
}

#[tokio::test(start_paused = true)]
async fn transitions_happen_exactly_on_the_threshold_probe() {
    let prober = ScriptedProber::new(SCRIPTED_LATENCY);
    let (checker, mut events) = start_checker(&prober, options(false));
    let t0 = Instant::now();
    let health = checker.upsert(7, ip(7), cfg(5, 2, 3)).unwrap();
    assert_eq!(health, InstanceHealth::registering());

    // Probes at 0 and 5 pass: HealthyThreshold - 1 = 2 passes is still OutOfService.
    sleep_until(t0 + Duration::from_millis(5_500)).await;
    let health = checker.get(&7).unwrap();
    assert_eq!(health.state, InstanceState::OutOfService);
    assert_eq!(health.reason_code, ReasonCode::Elb);
    assert_eq!(health.consecutive_passes, 2);
    assert_eq!(events.try_recv().unwrap_err(), TryRecvError::Empty);

    // The third pass, at 10 s, brings it in.
    let event = events.recv().await.unwrap();
    assert_near(
        Instant::now() - t0,
        Duration::from_secs(10) + SCRIPTED_LATENCY,
    );
    assert_eq!((event.key, event.ip), (7, ip(7)));
    assert_eq!(event.from.state, InstanceState::OutOfService);
    assert_eq!(event.from.reason_code, ReasonCode::Elb);
    assert_eq!(event.to.state, InstanceState::InService);
    assert_eq!(event.to.reason_code, ReasonCode::NotApplicable);
    assert_eq!(event.to.consecutive_passes, 3);
    assert_eq!(checker.get(&7).unwrap(), event.to);

    // Failing from 15 s: one failure (UnhealthyThreshold - 1) keeps it in.
    sleep_until(t0 + Duration::from_secs(12)).await;
    prober.set_failing(ip(7), true);
    sleep_until(t0 + Duration::from_secs(17)).await;
    let health = checker.get(&7).unwrap();
    assert_eq!(health.state, InstanceState::InService);
    assert_eq!(
        (health.consecutive_passes, health.consecutive_failures),
        (0, 1)
    );
    let last = health.last_probe.unwrap();
    assert!(!last.passed);
    assert_eq!(last.detail, "scripted failure");

    // The second failure, at 20 s, takes it out.
    let event = events.recv().await.unwrap();
    assert_near(
        Instant::now() - t0,
        Duration::from_secs(20) + SCRIPTED_LATENCY,
    );
    assert_eq!(event.from.state, InstanceState::InService);
    assert_eq!(event.to.state, InstanceState::OutOfService);
    assert_eq!(event.to.reason_code, ReasonCode::Instance);
    assert_eq!(event.to.description, DESCRIPTION_FAILED);
    assert_eq!(event.to.last_probe.unwrap().detail, "scripted failure");

    // Passing again from 25 s: back in on the third pass, at 35 s.
    sleep_until(t0 + Duration::from_secs(22)).await;
    prober.set_failing(ip(7), false);
    let event = events.recv().await.unwrap();
    assert_near(
        Instant::now() - t0,
        Duration::from_secs(35) + SCRIPTED_LATENCY,
    );
    assert_eq!(event.from.reason_code, ReasonCode::Instance);
    assert_eq!(event.to.state, InstanceState::InService);

    // Each transition is sent once: more passes send nothing.
    sleep_until(t0 + Duration::from_secs(90)).await;
    assert_eq!(events.try_recv().unwrap_err(), TryRecvError::Empty);
}

#[tokio::test(start_paused = true)]
async fn interleaved_results_never_reach_a_threshold() {
    let prober = ScriptedProber::new(SCRIPTED_LATENCY);
    let (checker, mut events) = start_checker(&prober, options(false));
    let t0 = Instant::now();
    checker
        .upsert_with_state(1, ip(1), cfg(5, 2, 2), InstanceHealth::in_service())
        .unwrap();
    // Fail, pass, fail, pass ...: never two in a row of either.
    for step in 0..10u32 {
        prober.set_failing(ip(1), step % 2 == 0);
        sleep_until(t0 + Duration::from_secs(u64::from(step) * 5 + 1)).await;
    }
    assert_eq!(prober.starts(ip(1)).len(), 10);
    assert!(checker.get(&1).unwrap().is_in_service());
    assert_eq!(events.try_recv().unwrap_err(), TryRecvError::Empty);
}

#[tokio::test(start_paused = true)]
async fn a_registering_instance_that_fails_takes_the_instance_reason_once() {
    let prober = ScriptedProber::new(SCRIPTED_LATENCY);
    prober.set_failing(ip(1), true);
    let (checker, mut events) = start_checker(&prober, options(false));
    let t0 = Instant::now();
    checker.upsert(1, ip(1), cfg(5, 2, 2)).unwrap();
    let event = events.recv().await.unwrap();
    assert_near(
        Instant::now() - t0,
        Duration::from_secs(5) + SCRIPTED_LATENCY,
    );
    assert_eq!(event.from.reason_code, ReasonCode::Elb);
    assert_eq!(event.to.state, InstanceState::OutOfService);
    assert_eq!(event.to.reason_code, ReasonCode::Instance);
    sleep_until(t0 + Duration::from_secs(60)).await;
    assert_eq!(events.try_recv().unwrap_err(), TryRecvError::Empty);
}

#[tokio::test(start_paused = true)]
async fn a_new_threshold_applies_from_the_next_probe_and_keeps_the_streak() {
    let prober = ScriptedProber::new(SCRIPTED_LATENCY);
    let (checker, mut events) = start_checker(&prober, options(false));
    let t0 = Instant::now();
    checker.upsert(1, ip(1), cfg(5, 2, 10)).unwrap();
    sleep_until(t0 + Duration::from_millis(10_500)).await;

    let health = checker.upsert(1, ip(1), cfg(5, 2, 4)).unwrap();
    assert_eq!(health.state, InstanceState::OutOfService);
    assert_eq!(
        health.consecutive_passes, 3,
        "streak kept across the change"
    );

    let event = events.recv().await.unwrap();
    assert_near(
        Instant::now() - t0,
        Duration::from_secs(15) + SCRIPTED_LATENCY,
    );
    assert_eq!(event.to.state, InstanceState::InService);
    assert_eq!(event.to.consecutive_passes, 4);
}

#[tokio::test(start_paused = true)]
async fn a_new_interval_reschedules_from_the_last_probe() {
    let prober = ScriptedProber::new(SCRIPTED_LATENCY);
    let (checker, _events) = start_checker(&prober, options(false));
    let t0 = Instant::now();
    checker.upsert(1, ip(1), cfg(30, 2, 2)).unwrap();
    sleep_until(t0 + Duration::from_secs(1)).await;
    checker.upsert(1, ip(1), cfg(5, 2, 2)).unwrap();
    sleep_until(t0 + Duration::from_secs(11)).await;
    let starts = offsets(t0, &prober.starts(ip(1)));
    assert_eq!(starts.len(), 3, "{starts:?}");
    assert_near(starts[1], Duration::from_secs(5));
    assert_near(starts[2], Duration::from_secs(10));

    // Lengthening it pushes the next probe out to last start + new Interval.
    checker.upsert(1, ip(1), cfg(20, 2, 2)).unwrap();
    sleep_until(t0 + Duration::from_secs(31)).await;
    let starts = offsets(t0, &prober.starts(ip(1)));
    assert_eq!(starts.len(), 4, "{starts:?}");
    assert_near(starts[3], Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn a_changed_address_restarts_as_registering() {
    let prober = ScriptedProber::new(SCRIPTED_LATENCY);
    let (checker, mut events) = start_checker(&prober, options(false));
    let t0 = Instant::now();
    checker
        .upsert_with_state(1, ip(1), cfg(5, 2, 2), InstanceHealth::in_service())
        .unwrap();
    sleep_until(t0 + Duration::from_secs(6)).await;
    assert_eq!(checker.get(&1).unwrap().consecutive_passes, 2);

    let health = checker.upsert(1, ip(2), cfg(5, 2, 2)).unwrap();
    assert_eq!(health, InstanceHealth::registering());
    assert_eq!(checker.get(&1).unwrap(), InstanceHealth::registering());
    sleep_until(t0 + Duration::from_secs(30)).await;
    assert_eq!(
        prober.starts(ip(1)).len(),
        2,
        "old address no longer probed"
    );
    assert!(prober.starts(ip(2)).len() >= 4);
    let event = events.recv().await.unwrap();
    assert_eq!(event.ip, ip(2));
    assert_eq!(event.to.state, InstanceState::InService);
}

#[tokio::test(start_paused = true)]
async fn a_seeded_state_is_kept_until_the_thresholds_say_otherwise() {
    let prober = ScriptedProber::new(SCRIPTED_LATENCY);
    prober.set_failing(ip(1), true);
    let (checker, mut events) = start_checker(&prober, options(false));
    let t0 = Instant::now();
    let health = checker
        .upsert_with_state(1, ip(1), cfg(5, 3, 2), InstanceHealth::in_service())
        .unwrap();
    assert!(health.is_in_service());
    sleep_until(t0 + Duration::from_secs(6)).await;
    assert!(checker.get(&1).unwrap().is_in_service());
    let event = events.recv().await.unwrap();
    assert_near(
        Instant::now() - t0,
        Duration::from_secs(10) + SCRIPTED_LATENCY,
    );
    assert_eq!(event.from.state, InstanceState::InService);
    assert_eq!(event.to.state, InstanceState::OutOfService);
}

#[tokio::test(start_paused = true)]
async fn a_removed_target_is_no_longer_probed() {
    let prober = ScriptedProber::new(SCRIPTED_LATENCY);
    let (checker, _events) = start_checker(&prober, options(false));
    let t0 = Instant::now();
    checker.upsert(1, ip(1), cfg(5, 2, 2)).unwrap();
    checker.upsert(2, ip(2), cfg(5, 2, 2)).unwrap();
    sleep_until(t0 + Duration::from_secs(7)).await;
    let removed = checker.remove(&1).unwrap();
    assert_eq!(removed.consecutive_passes, 2);
    assert_eq!(checker.remove(&1), None);

    sleep_until(t0 + Duration::from_secs(32)).await;
    assert_eq!(prober.starts(ip(1)).len(), 2);
    assert_eq!(prober.starts(ip(2)).len(), 7);
    assert_eq!(checker.get(&1), None);
    let keys: Vec<u32> = checker.snapshot().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, vec![2]);
    assert_eq!(checker.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_result_for_a_removed_target_is_discarded() {
    let prober = ScriptedProber::new(Duration::from_secs(3));
    prober.set_failing(ip(1), true);
    let (checker, mut events) = start_checker(&prober, options(false));
    let t0 = Instant::now();
    checker.upsert(1, ip(1), cfg(5, 2, 2)).unwrap();
    sleep_until(t0 + Duration::from_secs(1)).await;
    checker.remove(&1).unwrap();
    // Re-added while the old probe still runs: a new instance whose streak the old result
    // (due at 3 s) must not touch.
    sleep_until(t0 + Duration::from_secs(2)).await;
    checker.upsert(1, ip(1), cfg(5, 2, 2)).unwrap();
    sleep_until(t0 + Duration::from_secs(4)).await;
    let health = checker.get(&1).unwrap();
    assert_eq!(health.consecutive_failures, 0);
    assert_eq!(health.last_probe, None);
    sleep_until(t0 + Duration::from_secs(6)).await;
    assert_eq!(checker.get(&1).unwrap().consecutive_failures, 1);
    assert_eq!(events.try_recv().unwrap_err(), TryRecvError::Empty);
    // Starts at 0 (old entry) and 2 (new); next at 7.
    assert_eq!(prober.starts(ip(1)).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn invalid_health_checks_are_rejected() {
    let prober = ScriptedProber::new(SCRIPTED_LATENCY);
    let (checker, _events) = start_checker(&prober, options(false));
    let err = checker.upsert(9, ip(9), cfg(5, 2, 11)).unwrap_err();
    match &err {
        CheckerError::InvalidHealthCheck { source, .. } => {
            assert_eq!(source.0[0].field, "HealthCheck.HealthyThreshold")
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with("health check for instance 9 rejected"),
        "{err}"
    );
    assert!(checker.is_empty());
    sleep(Duration::from_secs(10)).await;
    assert_eq!(prober.total(), 0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_probing_and_refuses_upserts() {
    let prober = ScriptedProber::new(SCRIPTED_LATENCY);
    let (checker, mut events) = start_checker(&prober, options(false));
    let t0 = Instant::now();
    checker.upsert(1, ip(1), cfg(5, 2, 2)).unwrap();
    sleep_until(t0 + Duration::from_secs(6)).await;
    checker.shutdown().await;
    checker.shutdown().await;
    let probes = prober.total();
    assert_eq!(probes, 2);
    sleep(Duration::from_secs(60)).await;
    assert_eq!(prober.total(), probes);
    assert!(matches!(
        checker.upsert(2, ip(2), cfg(5, 2, 2)),
        Err(CheckerError::ShutDown)
    ));
    assert_eq!(checker.get(&1).unwrap().consecutive_passes, 2);
    let event = events
        .recv()
        .await
        .expect("InService, sent before shutdown");
    assert!(event.to.is_in_service());
    assert!(events.recv().await.is_none(), "event senders dropped");
}

#[tokio::test(start_paused = true)]
async fn dropping_every_handle_stops_the_scheduler() {
    let prober = ScriptedProber::new(SCRIPTED_LATENCY);
    let (checker, mut events) = start_checker(&prober, options(false));
    checker.upsert(1, ip(1), cfg(5, 2, 2)).unwrap();
    let clone = checker.clone();
    drop(checker);
    sleep(Duration::from_secs(6)).await;
    assert_eq!(prober.total(), 2, "a clone keeps it running");
    drop(clone);
    assert!(events.recv().await.unwrap().to.is_in_service());
    assert!(events.recv().await.is_none(), "scheduler gone");
    sleep(Duration::from_secs(60)).await;
    assert_eq!(prober.total(), 2);
}

mod logging {
    use std::fmt;

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Dispatch, Event, Level, Metadata, Subscriber};

    use super::*;

    type Fields = HashMap<&'static str, String>;

    /// Keeps the fields of every INFO event.
    struct Capture(Arc<Mutex<Vec<Fields>>>);

    struct FieldVisitor<'a>(&'a mut Fields);

    impl Visit for FieldVisitor<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            self.0.insert(field.name(), format!("{value:?}"));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.insert(field.name(), value.to_owned());
        }
    }

    impl Subscriber for Capture {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            if *event.metadata().level() == Level::INFO {
                let mut fields = Fields::new();
                event.record(&mut FieldVisitor(&mut fields));
                self.0.lock().unwrap().push(fields);
            }
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    #[tokio::test(start_paused = true)]
    async fn each_transition_is_logged_once_with_key_state_and_reason() {
        let logged = Arc::new(Mutex::new(Vec::new()));
        let capture = Dispatch::new(Capture(logged.clone()));
        // tracing caches each callsite's interest process-wide. With a single registered
        // dispatcher it computes that interest from the *registering thread's* default, so a
        // parallel test that first hits the transition callsite would cache "never" for us too.
        // A second live dispatcher makes every registration consult all of them.
        let _second = Dispatch::new(Capture(Arc::default()));
        // Thread-local, and a current-thread runtime runs every task on this thread.
        let _guard = tracing::dispatcher::set_default(&capture);
        tracing::callsite::rebuild_interest_cache();

        let prober = ScriptedProber::new(SCRIPTED_LATENCY);
        let (checker, mut events) = start_checker(&prober, options(false));
        checker.upsert(42, ip(42), cfg(5, 2, 2)).unwrap();
        events.recv().await.unwrap();
        prober.set_failing(ip(42), true);
        events.recv().await.unwrap();
        sleep(Duration::from_secs(60)).await;

        let logged = logged.lock().unwrap();
        let transitions: Vec<&Fields> = logged
            .iter()
            .filter(|f| f.get("message").map(String::as_str) == Some("instance health changed"))
            .collect();
        assert_eq!(transitions.len(), 2, "{logged:?}");
        let fields = |i: usize, name: &str| transitions[i].get(name).cloned().unwrap_or_default();
        assert_eq!(fields(0, "key"), "42");
        assert_eq!(fields(0, "state"), "InService");
        assert_eq!(fields(0, "reason"), "N/A");
        assert_eq!(fields(1, "state"), "OutOfService");
        assert_eq!(fields(1, "reason"), "Instance");
        assert_eq!(fields(1, "detail"), "scripted failure");
        assert_eq!(fields(1, "ip"), "10.0.0.42");
    }
}

mod end_to_end {
    use std::time::Instant as WallInstant;

    use super::*;

    /// Real sockets under paused time: while this guard lives tokio may not auto-advance the clock
    /// (a pending blocking task inhibits it), so a probe's own Timeout cannot fire merely because
    /// the runtime idled while the kernel moved loopback bytes. The test moves time by hand.
    struct FrozenClock(Option<std::sync::mpsc::Sender<()>>);

    impl FrozenClock {
        fn hold() -> Self {
            let (release, wait) = std::sync::mpsc::channel::<()>();
            task::spawn_blocking(move || {
                let _ = wait.recv();
            });
            Self(Some(release))
        }
    }

    impl Drop for FrozenClock {
        fn drop(&mut self) {
            drop(self.0.take());
        }
    }

    /// Lets a couple of milliseconds of wall-clock time pass without moving tokio's clock.
    async fn real_pause() {
        task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(2)))
            .await
            .unwrap();
    }

    /// Waits in real time (bounded) until `check` holds.
    async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
        let deadline = WallInstant::now() + Duration::from_secs(10);
        while !check() {
            assert!(
                WallInstant::now() < deadline,
                "timed out waiting for {what}"
            );
            real_pause().await;
        }
    }

    async fn next_event(
        events: &mut mpsc::Receiver<HealthEvent<&'static str>>,
    ) -> HealthEvent<&'static str> {
        let mut received = None;
        let deadline = WallInstant::now() + Duration::from_secs(10);
        while received.is_none() {
            match events.try_recv() {
                Ok(event) => received = Some(event),
                Err(TryRecvError::Empty) => {
                    assert!(WallInstant::now() < deadline, "no health event");
                    real_pause().await;
                }
                Err(TryRecvError::Disconnected) => panic!("checker stopped"),
            }
        }
        received.unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn http_instance_goes_out_when_its_server_stops_and_back_when_it_returns() {
        let _frozen = FrozenClock::hold();
        let server = HttpServer::start(HttpServerBehaviour::Route).await;
        let port = server.port();
        let (tx, mut events) = mpsc::channel(16);
        let checker = HealthChecker::spawn(tx, options(false));
        let cfg = HealthCheck {
            target: format!("HTTP:{port}/health").parse().unwrap(),
            interval: 5,
            timeout: 2,
            unhealthy_threshold: 2,
            healthy_threshold: 2,
        };
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let key = "i-0123456789abcdef0";
        let health = |c: &HealthChecker<&'static str>| c.get(&key).unwrap();
        checker.upsert(key, localhost, cfg).unwrap();

        // Probe 1 (t=0) passes; probe 2 (t=5) makes it InService.
        wait_for("first pass", || health(&checker).consecutive_passes == 1).await;
        assert_eq!(health(&checker).state, InstanceState::OutOfService);
        tokio::time::advance(Duration::from_secs(5)).await;
        let event = next_event(&mut events).await;
        assert_eq!(event.key, key);
        assert_eq!(event.to.state, InstanceState::InService);
        assert_eq!(event.to.last_probe.as_ref().unwrap().detail, "HTTP 200");
        assert_eq!(server.requests().len(), 2);

        // Server stops: probe 3 fails (still in), probe 4 takes it out.
        server.stop().await;
        tokio::time::advance(Duration::from_secs(5)).await;
        wait_for("first failure", || {
            health(&checker).consecutive_failures == 1
        })
        .await;
        assert_eq!(health(&checker).state, InstanceState::InService);
        tokio::time::advance(Duration::from_secs(5)).await;
        let event = next_event(&mut events).await;
        assert_eq!(event.from.state, InstanceState::InService);
        assert_eq!(event.to.state, InstanceState::OutOfService);
        assert_eq!(event.to.reason_code, ReasonCode::Instance);
        assert_eq!(
            event.to.last_probe.as_ref().unwrap().detail,
            "connect refused"
        );

        // Server back on the same port: probe 5 passes (still out), probe 6 brings it in.
        let server = HttpServer::start_on(port, HttpServerBehaviour::Route).await;
        tokio::time::advance(Duration::from_secs(5)).await;
        wait_for("first pass after restart", || {
            health(&checker).consecutive_passes == 1
        })
        .await;
        assert_eq!(health(&checker).state, InstanceState::OutOfService);
        tokio::time::advance(Duration::from_secs(5)).await;
        let event = next_event(&mut events).await;
        assert_eq!(event.from.state, InstanceState::OutOfService);
        assert_eq!(event.to.state, InstanceState::InService);
        assert_eq!(server.requests().len(), 2);
        assert_eq!(events.try_recv().unwrap_err(), TryRecvError::Empty);

        let latency = checker.latency_histogram().snapshot();
        assert_eq!(latency.count, 6);
        checker.shutdown().await;
    }
}
