use std::time::Duration;
use tests::flood::{self, Plan};
fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().unwrap())
        .unwrap_or(200);
    let plan = Plan {
        flood: Duration::from_secs(10),
        established: n,
        legit: std::env::args()
            .nth(2)
            .map(|a| a.parse().unwrap())
            .unwrap_or(0),
        after: 10,
    };
    let o = flood::run(plan).expect("flood");
    println!("{o:#?}");
}
