//! The per-instance threshold state machine: pure and synchronous, driven by probe results.
//!
//! States, reason codes and descriptions are the ones DescribeInstanceHealth reports:
//!
//! | Situation | State | ReasonCode | Description |
//! |---|---|---|---|
//! | registered, not yet HealthyThreshold passes | OutOfService | ELB | [`DESCRIPTION_REGISTERING`] |
//! | HealthyThreshold consecutive passes | InService | N/A | N/A |
//! | UnhealthyThreshold consecutive failures | OutOfService | Instance | [`DESCRIPTION_FAILED`] |
//!
//! A still-registering instance that fails UnhealthyThreshold times in a row switches to the
//! `Instance` reason while staying OutOfService, as ELB shows for instances that never came up;
//! that reason change is reported as a [`Transition`] too.

use std::borrow::Cow;

use elb_contract::{
    DESCRIPTION_FAILED, DESCRIPTION_REGISTERING, HealthCheck, InstanceState, NOT_APPLICABLE,
    ReasonCode,
};
use serde::{Deserialize, Serialize};

use super::probe::ProbeOutcome;

/// Health of one instance: the DescribeInstanceHealth triple plus the streaks that drive it.
///
/// Serialized with ELB-style member names so an agent can persist it and seed a restarted checker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InstanceHealth {
    /// InService or OutOfService.
    pub state: InstanceState,
    /// Who is responsible for `state`.
    pub reason_code: ReasonCode,
    /// ELB's human-readable explanation of `state`.
    pub description: Cow<'static, str>,
    /// Passes in a row, reset by any failure.
    pub consecutive_passes: u32,
    /// Failures in a row, reset by any pass.
    pub consecutive_failures: u32,
    /// The most recent probe, if any ran since this value was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe: Option<ProbeOutcome>,
}

/// A change of an instance's reported health (State, ReasonCode or Description).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// Health before the probe that caused the change.
    pub from: InstanceHealth,
    /// Health after it.
    pub to: InstanceHealth,
}

impl Default for InstanceHealth {
    fn default() -> Self {
        Self::registering()
    }
}

impl InstanceHealth {
    /// A newly registered instance: OutOfService, `ELB`, "Instance registration is still in
    /// progress.", no streaks.
    pub fn registering() -> Self {
        Self::with(
            InstanceState::OutOfService,
            ReasonCode::Elb,
            DESCRIPTION_REGISTERING,
        )
    }

    /// An instance in service (`N/A`, `N/A`), no streaks; for seeding a restarted checker.
    pub fn in_service() -> Self {
        Self::with(
            InstanceState::InService,
            ReasonCode::NotApplicable,
            NOT_APPLICABLE,
        )
    }

    /// The health control holds for an instance (what the servo that checked it before
    /// reported), no streaks: a servo taking the instance over starts from it. `Unknown`
    /// starts as registering.
    pub fn seeded(from: &elb_contract::InstanceHealth) -> Self {
        match from.state {
            InstanceState::Unknown => Self::registering(),
            state => Self {
                state,
                reason_code: from.reason_code,
                description: Cow::Owned(from.description.clone()),
                consecutive_passes: 0,
                consecutive_failures: 0,
                last_probe: None,
            },
        }
    }

    /// The DescribeInstanceHealth triple.
    pub fn status(&self) -> elb_contract::InstanceHealth {
        elb_contract::InstanceHealth {
            state: self.state,
            reason_code: self.reason_code,
            description: self.description.to_string(),
        }
    }

    fn with(state: InstanceState, reason_code: ReasonCode, description: &'static str) -> Self {
        Self {
            state,
            reason_code,
            description: Cow::Borrowed(description),
            consecutive_passes: 0,
            consecutive_failures: 0,
            last_probe: None,
        }
    }

    /// Whether new flows may go to this instance.
    pub fn is_in_service(&self) -> bool {
        self.state == InstanceState::InService
    }

    /// Counts one probe result against `cfg`'s thresholds.
    ///
    /// Returns the transition exactly once, on the probe that changes the reported health. The
    /// thresholds are read on every call, so a reconfigured check applies from the next probe and
    /// the streaks built under the old one still count.
    pub fn record(&mut self, passed: bool, cfg: &HealthCheck) -> Option<Transition> {
        let before = self.clone();
        self.apply(passed, cfg);
        self.transition_from(before)
    }

    /// [`record`](Self::record) for a full probe outcome, also kept as `last_probe`.
    pub fn record_probe(&mut self, outcome: ProbeOutcome, cfg: &HealthCheck) -> Option<Transition> {
        let before = self.clone();
        let passed = outcome.passed;
        self.last_probe = Some(outcome);
        self.apply(passed, cfg);
        self.transition_from(before)
    }

    fn apply(&mut self, passed: bool, cfg: &HealthCheck) {
        // A threshold of 0 (an unvalidated config) would otherwise flip state on the opposite
        // result; treat it as 1.
        let healthy_threshold = cfg.healthy_threshold.max(1);
        let unhealthy_threshold = cfg.unhealthy_threshold.max(1);
        if passed {
            self.consecutive_passes = self.consecutive_passes.saturating_add(1);
            self.consecutive_failures = 0;
            if self.state != InstanceState::InService
                && self.consecutive_passes >= healthy_threshold
            {
                self.set(
                    InstanceState::InService,
                    ReasonCode::NotApplicable,
                    NOT_APPLICABLE,
                );
            }
        } else {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            self.consecutive_passes = 0;
            let failed_enough = self.consecutive_failures >= unhealthy_threshold;
            let already_failed =
                self.state != InstanceState::InService && self.reason_code == ReasonCode::Instance;
            if failed_enough && !already_failed {
                self.set(
                    InstanceState::OutOfService,
                    ReasonCode::Instance,
                    DESCRIPTION_FAILED,
                );
            }
        }
    }

    fn set(&mut self, state: InstanceState, reason_code: ReasonCode, description: &'static str) {
        self.state = state;
        self.reason_code = reason_code;
        self.description = Cow::Borrowed(description);
    }

    fn transition_from(&self, before: Self) -> Option<Transition> {
        let changed = before.state != self.state
            || before.reason_code != self.reason_code
            || before.description != self.description;
        changed.then(|| Transition {
            from: before,
            to: self.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn cfg(healthy: u32, unhealthy: u32) -> HealthCheck {
        HealthCheck {
            target: "TCP:80".parse().unwrap(),
            interval: 30,
            timeout: 5,
            unhealthy_threshold: unhealthy,
            healthy_threshold: healthy,
        }
    }

    /// Records `n` identical results, asserting none of them is a transition.
    fn record_quietly(h: &mut InstanceHealth, passed: bool, n: u32, cfg: &HealthCheck) {
        for i in 0..n {
            assert_eq!(
                h.record(passed, cfg),
                None,
                "result #{} ({passed}) must not change {h:?}",
                i + 1
            );
        }
    }

    fn brought_in_service(cfg: &HealthCheck) -> InstanceHealth {
        let mut h = InstanceHealth::registering();
        record_quietly(&mut h, true, cfg.healthy_threshold - 1, cfg);
        assert!(h.record(true, cfg).is_some());
        assert!(h.is_in_service());
        h
    }

    #[test]
    fn a_new_instance_is_registering() {
        let h = InstanceHealth::default();
        assert_eq!(h.state, InstanceState::OutOfService);
        assert_eq!(h.reason_code, ReasonCode::Elb);
        assert_eq!(h.description, "Instance registration is still in progress.");
        assert_eq!((h.consecutive_passes, h.consecutive_failures), (0, 0));
        assert_eq!(h.last_probe, None);
    }

    #[test]
    fn states_and_reasons_display_as_elb_spells_them() {
        assert_eq!(InstanceState::InService.to_string(), "InService");
        assert_eq!(InstanceState::OutOfService.to_string(), "OutOfService");
        assert_eq!(ReasonCode::Elb.to_string(), "ELB");
        assert_eq!(ReasonCode::Instance.to_string(), "Instance");
        assert_eq!(ReasonCode::NotApplicable.to_string(), "N/A");
    }

    #[test]
    fn registering_goes_in_service_at_exactly_healthy_threshold_passes() {
        for healthy in [2, 3, 10] {
            let cfg = cfg(healthy, 2);
            let mut h = InstanceHealth::registering();
            record_quietly(&mut h, true, healthy - 1, &cfg);
            assert_eq!(h.state, InstanceState::OutOfService);
            assert_eq!(h.reason_code, ReasonCode::Elb);
            assert_eq!(h.consecutive_passes, healthy - 1);

            let t = h.record(true, &cfg).expect("HealthyThreshold-th pass");
            assert_eq!(t.from.state, InstanceState::OutOfService);
            assert_eq!(t.from.reason_code, ReasonCode::Elb);
            assert_eq!(t.to.state, InstanceState::InService);
            assert_eq!(t.to.reason_code, ReasonCode::NotApplicable);
            assert_eq!(t.to.description, "N/A");
            assert_eq!(t.to, h);
            assert_ne!(t.from.state, t.to.state);
        }
    }

    #[test]
    fn in_service_goes_out_at_exactly_unhealthy_threshold_failures() {
        for unhealthy in [2, 5, 10] {
            let cfg = cfg(2, unhealthy);
            let mut h = brought_in_service(&cfg);
            record_quietly(&mut h, false, unhealthy - 1, &cfg);
            assert!(h.is_in_service());
            assert_eq!(h.consecutive_failures, unhealthy - 1);
            assert_eq!(h.consecutive_passes, 0);

            let t = h
                .record(false, &cfg)
                .expect("UnhealthyThreshold-th failure");
            assert_eq!(t.from.state, InstanceState::InService);
            assert_eq!(t.to.state, InstanceState::OutOfService);
            assert_eq!(t.to.reason_code, ReasonCode::Instance);
            assert_eq!(
                t.to.description,
                "Instance has failed at least the UnhealthyThreshold number of health checks \
                 consecutively."
            );
            assert_ne!(t.from.state, t.to.state);
        }
    }

    #[test]
    fn failed_instance_comes_back_after_healthy_threshold_passes() {
        let cfg = cfg(3, 2);
        let mut h = brought_in_service(&cfg);
        record_quietly(&mut h, false, 1, &cfg);
        assert!(h.record(false, &cfg).is_some());
        assert_eq!(h.reason_code, ReasonCode::Instance);

        record_quietly(&mut h, true, 2, &cfg);
        assert_eq!(h.state, InstanceState::OutOfService);
        assert_eq!(
            h.reason_code,
            ReasonCode::Instance,
            "keeps its reason while recovering"
        );
        let t = h.record(true, &cfg).expect("third pass");
        assert_eq!(t.from.reason_code, ReasonCode::Instance);
        assert_eq!(t.to.state, InstanceState::InService);
    }

    #[test]
    fn transition_is_reported_once() {
        let cfg = cfg(2, 2);
        let mut h = brought_in_service(&cfg);
        record_quietly(&mut h, true, 20, &cfg);
        assert!(h.record(false, &cfg).is_none());
        assert!(h.record(false, &cfg).is_some());
        record_quietly(&mut h, false, 20, &cfg);
        assert_eq!(h.consecutive_failures, 22);
        assert_eq!(h.state, InstanceState::OutOfService);
    }

    #[test]
    fn registering_instance_that_keeps_failing_takes_the_instance_reason() {
        let cfg = cfg(2, 3);
        let mut h = InstanceHealth::registering();
        record_quietly(&mut h, false, 2, &cfg);
        assert_eq!(h.reason_code, ReasonCode::Elb);
        let t = h
            .record(false, &cfg)
            .expect("UnhealthyThreshold-th failure");
        assert_eq!(t.from.state, t.to.state);
        assert_eq!(t.from.reason_code, ReasonCode::Elb);
        assert_eq!(t.to.state, InstanceState::OutOfService);
        assert_eq!(t.to.reason_code, ReasonCode::Instance);
        assert_eq!(t.to.description, DESCRIPTION_FAILED);
        record_quietly(&mut h, false, 5, &cfg);
    }

    #[test]
    fn failures_below_unhealthy_threshold_do_not_disturb_registration() {
        let cfg = cfg(2, 3);
        let mut h = InstanceHealth::registering();
        record_quietly(&mut h, false, 2, &cfg);
        record_quietly(&mut h, true, 1, &cfg);
        assert_eq!(h.reason_code, ReasonCode::Elb);
        assert_eq!(h.consecutive_failures, 0);
        assert!(h.record(true, &cfg).is_some());
        assert!(h.is_in_service());
    }

    #[test]
    fn a_pass_resets_the_failure_streak() {
        let cfg = cfg(2, 3);
        let mut h = brought_in_service(&cfg);
        for _ in 0..5 {
            record_quietly(&mut h, false, 2, &cfg);
            assert_eq!(h.consecutive_failures, 2);
            record_quietly(&mut h, true, 1, &cfg);
            assert_eq!((h.consecutive_passes, h.consecutive_failures), (1, 0));
        }
        assert!(h.is_in_service(), "10 failures, never 3 in a row");
        record_quietly(&mut h, false, 2, &cfg);
        assert!(h.record(false, &cfg).is_some());
    }

    #[test]
    fn a_failure_resets_the_pass_streak() {
        let cfg = cfg(4, 2);
        let mut h = InstanceHealth::registering();
        for _ in 0..5 {
            record_quietly(&mut h, true, 3, &cfg);
            assert_eq!(h.consecutive_passes, 3);
            record_quietly(&mut h, false, 1, &cfg);
            assert_eq!((h.consecutive_passes, h.consecutive_failures), (0, 1));
        }
        assert_eq!(h.state, InstanceState::OutOfService);
        record_quietly(&mut h, true, 3, &cfg);
        assert!(h.record(true, &cfg).is_some());
    }

    #[test]
    fn lowering_healthy_threshold_applies_from_the_next_probe() {
        let mut h = InstanceHealth::registering();
        record_quietly(&mut h, true, 3, &cfg(10, 2));
        let lowered = cfg(4, 2);
        assert_eq!(h.consecutive_passes, 3, "streak survives the change");
        let t = h
            .record(true, &lowered)
            .expect("4th pass reaches the new threshold");
        assert!(t.to.is_in_service());
    }

    #[test]
    fn lowering_a_threshold_below_the_streak_needs_one_more_matching_result() {
        // Changing the config alone is not a probe: the state flips on the next pass, and a
        // failure instead starts over.
        let mut h = InstanceHealth::registering();
        record_quietly(&mut h, true, 5, &cfg(10, 2));
        let lowered = cfg(2, 2);
        assert_eq!(h.state, InstanceState::OutOfService);

        let mut passing = h.clone();
        assert!(passing.record(true, &lowered).is_some());

        record_quietly(&mut h, false, 1, &lowered);
        record_quietly(&mut h, true, 1, &lowered);
        assert!(h.record(true, &lowered).is_some());
    }

    #[test]
    fn raising_unhealthy_threshold_keeps_state_and_streak() {
        let mut h = brought_in_service(&cfg(2, 2));
        record_quietly(&mut h, false, 1, &cfg(2, 2));
        let raised = cfg(2, 5);
        record_quietly(&mut h, false, 3, &raised);
        assert!(h.is_in_service());
        assert_eq!(h.consecutive_failures, 4);
        assert!(h.record(false, &raised).is_some());
    }

    #[test]
    fn raising_healthy_threshold_delays_recovery() {
        let mut h = InstanceHealth::seeded(&elb_contract::InstanceHealth::failed());
        record_quietly(&mut h, true, 1, &cfg(2, 2));
        let raised = cfg(6, 2);
        record_quietly(&mut h, true, 4, &raised);
        assert_eq!(h.consecutive_passes, 5);
        assert!(h.record(true, &raised).is_some());
    }

    #[test]
    fn streaks_saturate() {
        let cfg = cfg(2, 2);
        let mut h = InstanceHealth::in_service();
        h.consecutive_passes = u32::MAX;
        assert!(h.record(true, &cfg).is_none());
        assert_eq!(h.consecutive_passes, u32::MAX);
    }

    #[test]
    fn zero_thresholds_behave_like_one() {
        let cfg = cfg(0, 0);
        let mut h = InstanceHealth::registering();
        assert!(h.record(false, &cfg).is_some());
        assert_eq!(h.state, InstanceState::OutOfService);
        assert!(h.record(true, &cfg).is_some());
        assert!(h.is_in_service());
    }

    #[test]
    fn record_probe_keeps_the_outcome() {
        let cfg = cfg(2, 2);
        let mut h = InstanceHealth::in_service();
        let outcome = ProbeOutcome {
            passed: false,
            latency: Duration::from_millis(12),
            detail: "HTTP 500".into(),
        };
        assert!(h.record_probe(outcome.clone(), &cfg).is_none());
        assert_eq!(h.last_probe.as_ref(), Some(&outcome));
        let t = h.record_probe(outcome.clone(), &cfg).unwrap();
        assert_eq!(t.to.last_probe, Some(outcome));
        assert_eq!(t.to.consecutive_failures, 2);
        assert_eq!(t.from.consecutive_failures, 1);
    }

    #[test]
    fn serde_round_trip_with_elb_names() {
        let h = InstanceHealth::seeded(&elb_contract::InstanceHealth::failed());
        let json = serde_json::to_value(&h).unwrap();
        assert_eq!(json["State"], "OutOfService");
        assert_eq!(json["ReasonCode"], "Instance");
        assert_eq!(json["Description"], DESCRIPTION_FAILED);
        assert_eq!(serde_json::from_value::<InstanceHealth>(json).unwrap(), h);
        let json = serde_json::to_value(InstanceHealth::in_service()).unwrap();
        assert_eq!(json["ReasonCode"], "N/A");
        let json = serde_json::to_value(InstanceHealth::registering()).unwrap();
        assert_eq!(json["ReasonCode"], "ELB");
    }
}
