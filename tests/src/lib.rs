//! Test support shared by the integration tests, the demo and the benchmarks: network
//! namespaces, topologies, real HTTP backends and clients, and packet fixtures.

pub mod agent;
pub mod bench;
pub mod browser;
pub mod dns;
pub mod fixture;
pub mod flood;
pub mod http;
pub mod moto;
pub mod netns;
pub mod packet;
pub mod progs;
pub mod system;
pub mod topo;
