//! Code shared by the two XDP objects this crate builds: `elb` (the production object: the load
//! balancer and the pass-through program) and `elb-bench` (the benchmark and test programs).
#![no_std]

pub mod hdr;
