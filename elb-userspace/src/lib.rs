//! Userspace side of the load balancer: loader, map writers, health checks.

pub mod health;
