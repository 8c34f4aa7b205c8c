//! End to end over the same namespaced topology: our XDP load balancer, HAProxy and nftables NAT,
//! in turn, each in fresh namespaces, measured with wrk. (Filled in by the e2e bench work.)
