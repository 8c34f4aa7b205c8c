//! The control service of the ELB product: the ELB Query API (2012-06-01) with SigV4
//! authentication, IAM-style policies, quotas, and a store (SQLite or PostgreSQL); plus the
//! administration operations behind `elb-control admin`.
//!
//! Layout: [`server`] (HTTP, authentication, request ids) calls [`api`] (one module per group
//! of actions) which works on [`model`] types kept in the [`store`]. The ELB model's rules are
//! the contract's ([`elb_contract`]); API parsing and the API's own rules live in [`query`],
//! [`validate`], [`iam`]; [`inventory`] resolves zones, subnets, VPCs, security groups and
//! instances (built-in, or an EC2-compatible cloud through [`cloud`], which also reads the
//! cloud's IAM and ACM certificates);
//! [`xml`] and [`error`] write responses. Signatures (SigV4, both directions) come from the
//! `elb-sigv4` crate. [`service`] wires a whole server (`elb-control
//! serve`) and can be started in-process.
//!
//! Servos (the load balancer nodes) talk to [`servo_api`] on the same listener; [`assign`]
//! keeps each load balancer on `servos-per-zone` live servos per zone; [`dns`] answers the
//! load balancers' DNS names with the VIPs of their live servos; [`readiness`] says whether
//! each zone has live servos with room, and refuses changes no live servo could serve;
//! [`metrics`] aggregates what servos report into metrics per load balancer and zone.

pub mod admin;
pub mod api;
pub mod assign;
pub mod certs;
pub mod cloud;
pub mod config;
pub mod console;
pub mod dns;
pub mod error;
pub mod iam;
pub mod inventory;
pub mod metrics;
pub mod model;
pub mod query;
pub mod quota;
pub mod readiness;
pub mod server;
pub mod service;
pub mod servo_api;
pub mod store;
pub mod timefmt;
pub mod tls;
pub mod validate;
pub mod xml;

pub use server::{AppState, app, run};
