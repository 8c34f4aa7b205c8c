//! Which instances a servo forwards to: the zone rule, one implementation for control (which
//! decides who checks what and sends each servo the states it needs) and for servos (which
//! decide eligibility with it).
//!
//! - Each zone's servos health-check the instances of their own zone; other zones' states
//!   reach them through control.
//! - With CrossZoneLoadBalancing on, a servo forwards to every InService instance of the load
//!   balancer's enabled zones.
//! - With it off, a servo forwards to the InService instances of its own zone; when its zone
//!   has none, to the InService instances of the other zones (Eucalyptus' behaviour). So every
//!   address DNS hands out keeps working, also for clients that cached an answer, where AWS
//!   would take the zone's address out of DNS.
//! - A servo without a zone (standalone), or an instance without one, is local.

/// Whether a servo of `servo_zone` health-checks an instance of `instance_zone` itself.
pub fn checked_by(servo_zone: Option<&str>, instance_zone: Option<&str>) -> bool {
    is_local(servo_zone, instance_zone)
}

fn is_local(servo_zone: Option<&str>, instance_zone: Option<&str>) -> bool {
    match (servo_zone, instance_zone) {
        (Some(s), Some(i)) => s == i,
        _ => true,
    }
}

/// One instance as the rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// The instance's zone.
    pub zone: Option<&'a str>,
    /// Whether it is InService.
    pub in_service: bool,
}

/// For each instance of one load balancer, whether a servo of `servo_zone` sends it new
/// connections.
pub fn eligible(
    servo_zone: Option<&str>,
    cross_zone: bool,
    instances: &[Candidate<'_>],
) -> Vec<bool> {
    let own_zone_serves = instances
        .iter()
        .any(|c| c.in_service && is_local(servo_zone, c.zone));
    instances
        .iter()
        .map(|c| c.in_service && (cross_zone || !own_zone_serves || is_local(servo_zone, c.zone)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(zone: &str, in_service: bool) -> Candidate<'_> {
        Candidate {
            zone: Some(zone),
            in_service,
        }
    }

    #[test]
    fn own_zone_first_without_cross_zone() {
        let set = [c("a", true), c("a", false), c("b", true)];
        assert_eq!(eligible(Some("a"), false, &set), [true, false, false]);
        assert_eq!(eligible(Some("a"), true, &set), [true, false, true]);
    }

    #[test]
    fn a_zone_without_in_service_instances_forwards_to_the_others() {
        // No instance in zone b at all.
        let set = [c("a", true), c("a", true)];
        assert_eq!(eligible(Some("b"), false, &set), [true, true]);
        // Zone b's instances are all out of service.
        let set = [c("a", true), c("b", false), c("c", true), c("c", false)];
        assert_eq!(eligible(Some("b"), false, &set), [true, false, true, false]);
        // As soon as one comes back, zone b keeps to itself again.
        let set = [c("a", true), c("b", true)];
        assert_eq!(eligible(Some("b"), false, &set), [false, true]);
    }

    #[test]
    fn nothing_in_service_means_nothing_eligible() {
        let set = [c("a", false), c("b", false)];
        assert_eq!(eligible(Some("a"), false, &set), [false, false]);
        assert_eq!(eligible(Some("a"), true, &set), [false, false]);
        assert!(eligible(Some("a"), false, &[]).is_empty());
    }

    #[test]
    fn zoneless_servos_and_instances_are_local() {
        let set = [
            Candidate {
                zone: None,
                in_service: true,
            },
            c("b", true),
        ];
        assert_eq!(eligible(None, false, &set), [true, true]);
        assert_eq!(eligible(Some("a"), false, &set), [true, false]);
        assert!(checked_by(None, Some("b")) && checked_by(Some("a"), None));
        assert!(checked_by(Some("a"), Some("a")) && !checked_by(Some("a"), Some("b")));
    }
}
