//! Userspace side of the load balancer: loading and pinning the XDP program, writing its maps,
//! health-checking backends, and the servo agent (`elb-servo run`) that ties them together.

pub mod accesslog;
pub mod agent;
pub mod config;
pub mod dataplane;
pub mod health;
