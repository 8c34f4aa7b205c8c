//! Userspace side of the load balancer: loading and pinning the XDP program, writing its maps,
//! health-checking backends, and (in the `elb-servo` binary) the agent that ties them together.

pub mod dataplane;
pub mod health;
