//! portable mode: datacenters are loopback address groups (`127.0.<dc>.<node>`), which the
//! kernel cannot partition; the nodes' own Raft transport and liveness pings drop traffic on
//! an admin command (`SetFaults`, which only `bongsu-node-chaos` accepts).

use std::net::Ipv4Addr;

use bongsu_proto::internal::FaultRule;

/// The address of node `k` of datacenter `d`.
pub fn node_ip(d: u8, k: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, d, k)
}

/// The rules a node of datacenter `dc` needs so that datacenter `isolated` is cut off from the
/// others: its own nodes drop traffic to and from every other datacenter, every other node
/// drops traffic to and from it. Traffic inside a datacenter flows.
pub fn partition_rules(dc: u8, isolated: u8, dcs: u8) -> Vec<FaultRule> {
    let drop = |d: u8| FaultRule {
        dc: format!("dc{d}"),
        direction: "both".into(),
        action: "drop".into(),
        delay_ms: 0,
    };
    if dc == isolated {
        (1..=dcs).filter(|d| *d != isolated).map(drop).collect()
    } else {
        vec![drop(isolated)]
    }
}

#[cfg(test)]
mod tests {
    use super::partition_rules;

    #[test]
    fn partition_cuts_one_datacenter_both_ways() {
        let names = |dc, isolated| {
            partition_rules(dc, isolated, 3)
                .into_iter()
                .map(|r| r.dc)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(1, 1), ["dc2", "dc3"]);
        assert_eq!(names(2, 1), ["dc1"]);
        assert_eq!(names(3, 1), ["dc1"]);
        assert!(partition_rules(2, 1, 3)
            .iter()
            .all(|r| r.direction == "both" && r.action == "drop"));
    }
}
