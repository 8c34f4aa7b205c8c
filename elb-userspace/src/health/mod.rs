//! ELB health checks.
