//! A spoofed SYN flood through a servo running the shipped example configuration
//! (`packaging/servo/servo.toml.example`, adapted to the namespaces; see `tests::flood`): at the
//! highest rate the machine generates, for 10 s, from 32,766 addresses.
//!
//! Established keep-alive connections must all survive it (not one reset), and new connections
//! made during it and after it must succeed (99 % at least; the flood shares two CPUs with
//! everything else, so a few may time out, but none may be refused).

use std::time::Duration;

use tests::flood::{self, Plan};

#[test]
fn established_connections_survive_a_syn_flood_and_new_ones_get_in() {
    let plan = Plan {
        flood: Duration::from_secs(10),
        established: 200,
        legit: 1000,
        after: 300,
    };
    let o = flood::run(plan).expect("running the flood");
    println!("{o:#?}");
    assert!(
        o.syns_sent > 1_000_000,
        "a real flood: {} SYNs",
        o.syns_sent
    );
    assert_eq!(
        o.established_ok, plan.established,
        "every established connection carried requests throughout: {:?}",
        o.failures
    );
    assert!(o.established_requests > plan.established as u64);
    assert!(
        o.legit_ok * 100 >= plan.legit * 99,
        "{} of {} new connections during the flood: {:?}",
        o.legit_ok,
        plan.legit,
        o.failures
    );
    assert!(
        o.after_ok * 100 >= plan.after * 99,
        "{} of {} new connections after the flood: {:?}",
        o.after_ok,
        plan.after,
        o.failures
    );
    assert!(
        o.counters.syncookies_sent > 0,
        "the flood was answered with cookies"
    );
}
