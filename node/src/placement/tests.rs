//! Placement tests: fresh maps, the checker, and simulated joins, drains and stops.

use std::collections::BTreeMap;

use super::*;

/// A registry with `sizes[d]` Active nodes in datacenter `dc{d+1}`, ids 1, 2, ... in order.
fn cluster(sizes: &[usize]) -> Vec<NodeDesc> {
    let mut nodes = Vec::new();
    for (d, &n) in sizes.iter().enumerate() {
        for _ in 0..n {
            let id = nodes.len() as NodeId + 1;
            nodes.push(NodeDesc {
                id,
                dc: format!("dc{}", d + 1),
                state: NodeState::Active,
            });
        }
    }
    nodes
}

fn set_state(nodes: &mut [NodeDesc], id: NodeId, state: NodeState) {
    nodes
        .iter_mut()
        .find(|n| n.id == id)
        .expect("node exists")
        .state = state;
}

fn active(nodes: &[NodeDesc]) -> impl Iterator<Item = &NodeDesc> {
    nodes.iter().filter(|n| n.state == NodeState::Active)
}

/// Replicas per Active node, zeros included.
fn replica_counts(nodes: &[NodeDesc], map: &[ShardReplicas]) -> BTreeMap<NodeId, usize> {
    active(nodes)
        .map(|n| (n.id, map.iter().filter(|e| e.contains(n.id)).count()))
        .collect()
}

/// Preferred leaderships per Active node, zeros included.
fn leader_counts(nodes: &[NodeDesc], map: &[ShardReplicas]) -> BTreeMap<NodeId, usize> {
    active(nodes)
        .map(|n| {
            (
                n.id,
                map.iter()
                    .filter(|e| e.preferred_leader() == Some(n.id))
                    .count(),
            )
        })
        .collect()
}

fn spread<'a>(values: impl IntoIterator<Item = &'a usize>) -> usize {
    let values: Vec<usize> = values.into_iter().copied().collect();
    values.iter().max().unwrap() - values.iter().min().unwrap()
}

/// Counts grouped by the datacenter of each node.
fn by_dc(nodes: &[NodeDesc], counts: &BTreeMap<NodeId, usize>) -> BTreeMap<String, Vec<usize>> {
    let mut out: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for n in active(nodes) {
        out.entry(n.dc.clone()).or_default().push(counts[&n.id]);
    }
    out
}

fn dc_totals(nodes: &[NodeDesc], counts: &BTreeMap<NodeId, usize>) -> Vec<usize> {
    by_dc(nodes, counts)
        .values()
        .map(|v| v.iter().sum())
        .collect()
}

fn dc_name(nodes: &[NodeDesc], id: NodeId) -> &str {
    &nodes.iter().find(|n| n.id == id).unwrap().dc
}

fn assert_clean(nodes: &[NodeDesc], map: &[ShardReplicas], replicas: u32, context: &str) {
    let violations = check(nodes, map, replicas);
    assert!(
        violations.is_empty(),
        "{context}: {}",
        violations
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The promise for replicas: within every datacenter, Active nodes differ by at most one.
fn assert_replicas_even_within_dcs(nodes: &[NodeDesc], map: &[ShardReplicas], context: &str) {
    for (dc, counts) in by_dc(nodes, &replica_counts(nodes, map)) {
        assert!(
            spread(&counts) <= 1,
            "{context}: replicas in {dc}: {counts:?}"
        );
    }
}

/// The promise for leaders: datacenter totals differ by at most one, and so do the nodes of
/// each datacenter.
fn assert_leaders_even(nodes: &[NodeDesc], map: &[ShardReplicas], context: &str) {
    let counts = leader_counts(nodes, map);
    let totals = dc_totals(nodes, &counts);
    assert!(
        spread(&totals) <= 1,
        "{context}: leaders per datacenter: {totals:?}"
    );
    for (dc, counts) in by_dc(nodes, &counts) {
        assert!(
            spread(&counts) <= 1,
            "{context}: leaders in {dc}: {counts:?}"
        );
    }
}

/// Plans and applies replica moves until the planner is done, checking the map after every
/// step. Returns the moves.
fn rebalance(
    nodes: &[NodeDesc],
    map: &mut [ShardReplicas],
    replicas: u32,
    max_steps: usize,
) -> Vec<Move> {
    let mut moves = Vec::new();
    while let Some(mv) = plan_move(nodes, map, replicas) {
        assert!(
            moves.len() < max_steps,
            "rebalancer did not finish in {max_steps} steps"
        );
        assert!(
            apply_move(map, &mv),
            "planned move {mv:?} does not fit the map"
        );
        assert_clean(
            nodes,
            map,
            replicas,
            &format!("after step {} ({mv:?})", moves.len() + 1),
        );
        moves.push(mv);
    }
    moves
}

fn apply_leader_moves(nodes: &[NodeDesc], map: &mut [ShardReplicas]) -> usize {
    let moves = preferred_leader_moves(nodes, map);
    for &(shard, to) in &moves {
        assert!(apply_move(map, &Move::PromoteLeader { shard, to }));
    }
    moves.len()
}

#[test]
fn initial_placement_is_valid_and_balanced() {
    // (name, nodes per datacenter, shards, replicas, voters per datacenter in every shard)
    type Case = (
        &'static str,
        &'static [usize],
        u32,
        u32,
        Option<&'static [usize]>,
    );
    let cases: &[Case] = &[
        ("3 dcs x 1 node", &[1, 1, 1], 64, 3, Some(&[1, 1, 1])),
        ("3 dcs x 2 nodes", &[2, 2, 2], 64, 3, Some(&[1, 1, 1])),
        ("3 dcs x 3 nodes", &[3, 3, 3], 64, 3, Some(&[1, 1, 1])),
        ("uneven 3-1-2", &[3, 1, 2], 64, 3, Some(&[1, 1, 1])),
        ("one shard", &[2, 2, 2], 1, 3, Some(&[1, 1, 1])),
        ("7 shards on 3 x 3", &[3, 3, 3], 7, 3, Some(&[1, 1, 1])),
        ("4 dcs x 1 node", &[1, 1, 1, 1], 64, 3, None),
        ("R=5 over 3 dcs", &[2, 2, 2], 64, 5, Some(&[1, 2, 2])),
        ("R=5 over uneven 3 dcs", &[3, 2, 1], 64, 5, Some(&[1, 2, 2])),
        (
            "R=5 over 5 dcs x 1",
            &[1, 1, 1, 1, 1],
            64,
            5,
            Some(&[1, 1, 1, 1, 1]),
        ),
        (
            "R=5 over 5 dcs x 2",
            &[2, 2, 2, 2, 2],
            64,
            5,
            Some(&[1, 1, 1, 1, 1]),
        ),
        ("R=7 over 3 dcs x 3", &[3, 3, 3], 16, 7, None),
    ];
    for &(name, sizes, shards, replicas, shape) in cases {
        let nodes = cluster(sizes);
        let map =
            initial_placement(&nodes, shards, replicas).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(map.len(), shards as usize, "{name}");
        assert_clean(&nodes, &map, replicas, name);
        if let Some(shape) = shape {
            for entry in &map {
                let mut per_dc: BTreeMap<&str, usize> = BTreeMap::new();
                for &v in &entry.voters {
                    *per_dc.entry(dc_name(&nodes, v)).or_default() += 1;
                }
                let mut got: Vec<usize> = per_dc.into_values().collect();
                got.sort_unstable();
                assert_eq!(got, shape, "{name}: shard {}", entry.shard);
            }
        }
        assert_replicas_even_within_dcs(&nodes, &map, name);
        assert_leaders_even(&nodes, &map, name);
        if sizes.iter().all(|&s| s == sizes[0]) {
            // Equal datacenters: the promises add up to an even spread over all nodes.
            let replicas_spread = spread(replica_counts(&nodes, &map).values());
            let leaders_spread = spread(leader_counts(&nodes, &map).values());
            assert!(
                replicas_spread <= 1,
                "{name}: replicas spread {replicas_spread}"
            );
            assert!(
                leaders_spread <= 1,
                "{name}: leaders spread {leaders_spread}"
            );
        }
        // A fresh map is already where the rebalancer and the leader balancer would take it.
        assert_eq!(plan_move(&nodes, &map, replicas), None, "{name}");
        assert_eq!(preferred_leader_moves(&nodes, &map), vec![], "{name}");
    }
}

#[test]
fn uneven_datacenters_share_replicas_within_each_datacenter() {
    let nodes = cluster(&[3, 1, 2]);
    let map = initial_placement(&nodes, 64, 3).unwrap();
    let replicas = replica_counts(&nodes, &map);
    // R=3 over three datacenters: each holds one replica of every shard, however many nodes.
    assert_eq!(by_dc(&nodes, &replicas)["dc1"].iter().sum::<usize>(), 64);
    assert_eq!(replicas[&4], 64, "dc2's only node holds every shard");
    assert_eq!(by_dc(&nodes, &replicas)["dc3"], vec![32, 32]);
    let leaders = leader_counts(&nodes, &map);
    let mut totals = dc_totals(&nodes, &leaders);
    totals.sort_unstable();
    assert_eq!(totals, vec![21, 21, 22]);
}

#[test]
fn initial_placement_mixes_node_combinations() {
    // Round-robin in step in every datacenter would pair the same nodes in every shard
    // (copysets); a drained or failed node's shards would then fall on the same few peers.
    let nodes = cluster(&[2, 2, 2]);
    let map = initial_placement(&nodes, 64, 3).unwrap();
    for a in 1..=6 {
        for b in (a + 1)..=6 {
            let shared = map
                .iter()
                .filter(|e| e.contains(a) && e.contains(b))
                .count();
            let expected = if dc_name(&nodes, a) == dc_name(&nodes, b) {
                0
            } else {
                16
            };
            assert_eq!(shared, expected, "nodes {a} and {b}");
        }
    }
}

#[test]
fn initial_placement_skips_nodes_that_are_not_active() {
    let mut nodes = cluster(&[2, 2, 2]);
    set_state(&mut nodes, 1, NodeState::Draining);
    set_state(&mut nodes, 3, NodeState::Removed);
    let map = initial_placement(&nodes, 64, 3).unwrap();
    assert_clean(&nodes, &map, 3, "skips inactive");
    assert!(map.iter().all(|e| !e.contains(1) && !e.contains(3)));
}

#[test]
fn initial_placement_is_deterministic() {
    let nodes = cluster(&[3, 1, 2]);
    let first = initial_placement(&nodes, 64, 3).unwrap();
    assert_eq!(initial_placement(&nodes, 64, 3).unwrap(), first);
    let mut shuffled = nodes.clone();
    shuffled.reverse();
    shuffled.swap(0, 3);
    assert_eq!(initial_placement(&shuffled, 64, 3).unwrap(), first);
}

#[test]
fn initial_placement_refuses_impossible_layouts() {
    let mut duplicated = cluster(&[1, 1, 1]);
    duplicated.push(duplicated[0].clone());
    let mut one_dc_draining = cluster(&[2, 2, 1, 1]);
    set_state(&mut one_dc_draining, 5, NodeState::Draining);
    set_state(&mut one_dc_draining, 6, NodeState::Removed);
    // (name, nodes, shards, replicas, expected error, words the message must contain)
    type Case = (
        &'static str,
        Vec<NodeDesc>,
        u32,
        u32,
        PlacementError,
        &'static [&'static str],
    );
    let cases: Vec<Case> = vec![
        (
            "two datacenters",
            cluster(&[2, 2]),
            64,
            3,
            PlacementError::TooFewDatacenters {
                found: 2,
                dcs: "dc1, dc2".into(),
            },
            &["2 datacenter(s) (dc1, dc2)", "at least 3"],
        ),
        (
            "inactive nodes do not count",
            one_dc_draining,
            64,
            3,
            PlacementError::TooFewDatacenters {
                found: 2,
                dcs: "dc1, dc2".into(),
            },
            &["2 datacenter(s)"],
        ),
        (
            "too few nodes",
            cluster(&[1, 1, 1]),
            64,
            5,
            PlacementError::TooFewNodes {
                active: 3,
                replicas: 5,
            },
            &["3 active node(s)", "5 distinct voters"],
        ),
        (
            "R=4",
            cluster(&[2, 2, 2]),
            64,
            4,
            PlacementError::ReplicationFactor { replicas: 4 },
            &["replication factor 4", "odd"],
        ),
        (
            "R=1",
            cluster(&[1, 1, 1]),
            64,
            1,
            PlacementError::ReplicationFactor { replicas: 1 },
            &["replication factor 1"],
        ),
        (
            "no shards",
            cluster(&[1, 1, 1]),
            0,
            3,
            PlacementError::NoShards,
            &["at least 1 shard"],
        ),
        (
            "R=5 cannot avoid a majority",
            cluster(&[3, 1, 1]),
            64,
            5,
            PlacementError::DatacenterCapacity {
                replicas: 5,
                per_dc: 2,
                capacity: 4,
            },
            &[
                "at most 2 voter(s) per datacenter",
                "only 4",
                "5 are needed",
            ],
        ),
        (
            "duplicate node id",
            duplicated,
            64,
            3,
            PlacementError::DuplicateNode { id: 1 },
            &["node 1 is registered more than once"],
        ),
    ];
    for (name, nodes, shards, replicas, expected, words) in cases {
        let err = initial_placement(&nodes, shards, replicas).expect_err(name);
        assert_eq!(err, expected, "{name}");
        let message = err.to_string();
        for word in words {
            assert!(message.contains(word), "{name}: {message:?} lacks {word:?}");
        }
    }
}

/// A clean 3 x 2 map of four shards: dc1 = {1, 2}, dc2 = {3, 4}, dc3 = {5, 6}.
fn small_map() -> (Vec<NodeDesc>, Vec<ShardReplicas>) {
    let nodes = cluster(&[2, 2, 2]);
    let map = initial_placement(&nodes, 4, 3).unwrap();
    (nodes, map)
}

/// The other node of a node's datacenter in [`small_map`].
fn partner(id: NodeId) -> NodeId {
    if id % 2 == 1 {
        id + 1
    } else {
        id - 1
    }
}

type Mutation = fn(&mut Vec<NodeDesc>, &mut Vec<ShardReplicas>);

#[test]
fn check_reports_each_broken_rule() {
    use rule::*;
    // (name, how to break the map, the (shard, rule) pairs expected, text one detail contains)
    type Case = (
        &'static str,
        Mutation,
        Vec<(Option<u32>, &'static str)>,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        ("clean", |_, _| {}, vec![], ""),
        (
            "draining nodes may hold replicas",
            |nodes, _| set_state(nodes, 1, NodeState::Draining),
            vec![],
            "",
        ),
        (
            "a voter too few",
            |_, map| {
                map[0].voters.pop();
            },
            vec![(Some(0), VOTER_COUNT), (Some(0), DC_SPREAD)],
            "has 2 voters, expected 3",
        ),
        (
            "a voter too many",
            |_, map| {
                let extra = partner(map[0].voters[0]);
                map[0].voters.push(extra);
            },
            vec![(Some(0), VOTER_COUNT)],
            "has 4 voters, expected 3",
        ),
        (
            "same voter twice",
            |_, map| map[0].voters[2] = map[0].voters[1],
            vec![(Some(0), DUPLICATE_NODE), (Some(0), DC_SPREAD)],
            "is listed 2 times among voters",
        ),
        (
            "voter and learner at once",
            |_, map| {
                let v = map[1].voters[1];
                map[1].learners.push(v);
            },
            vec![(Some(1), DUPLICATE_NODE)],
            "is both a voter and a learner",
        ),
        (
            "same learner twice",
            |_, map| {
                let l = partner(map[2].voters[0]);
                map[2].learners = vec![l, l];
            },
            vec![(Some(2), DUPLICATE_NODE)],
            "is listed 2 times among learners",
        ),
        (
            "unregistered voter",
            |_, map| map[0].voters[1] = 99,
            vec![(Some(0), UNKNOWN_NODE), (Some(0), DC_SPREAD)],
            "voter 99 is not a registered node",
        ),
        (
            "unregistered learner",
            |_, map| map[3].learners.push(99),
            vec![(Some(3), UNKNOWN_NODE)],
            "learner 99 is not a registered node",
        ),
        (
            "removed voter",
            |nodes, map| {
                // Only shard 0 keeps its leader x; elsewhere x's datacenter partner takes over.
                let x = map[0].voters[0];
                for e in map.iter_mut().skip(1) {
                    if let Some(pos) = e.voters.iter().position(|&v| v == x) {
                        e.voters[pos] = partner(x);
                    }
                }
                set_state(nodes, x, NodeState::Removed);
            },
            vec![(Some(0), REMOVED_NODE)],
            " is Removed",
        ),
        (
            "a datacenter holds a majority",
            |_, map| {
                let leader = map[0].voters[0];
                map[0].voters[1] = partner(leader);
            },
            vec![(Some(0), DC_MAJORITY), (Some(0), DC_SPREAD)],
            "holds 2 of 3 voters",
        ),
        (
            "a shard is missing",
            |_, map| {
                map.remove(1);
            },
            vec![(Some(1), SHARD_NUMBERS), (Some(3), SHARD_NUMBERS)],
            "shard 1 is missing from a map of 3 entries",
        ),
        (
            "a shard appears twice",
            |_, map| map[3].shard = 2,
            vec![(Some(2), SHARD_NUMBERS), (Some(3), SHARD_NUMBERS)],
            "shard 2 appears 2 times in the map",
        ),
        (
            "a shard number out of range",
            |_, map| map[3].shard = 9,
            vec![(Some(3), SHARD_NUMBERS), (Some(9), SHARD_NUMBERS)],
            "shard number 9 is outside 0..4",
        ),
        (
            "a node registered twice",
            |nodes, _| nodes.push(nodes[0].clone()),
            vec![(None, DUPLICATE_REGISTRATION)],
            "node 1 is registered more than once",
        ),
    ];
    for (name, mutate, expected, text) in cases {
        let (mut nodes, mut map) = small_map();
        mutate(&mut nodes, &mut map);
        let violations = check(&nodes, &map, 3);
        let mut got: Vec<(Option<u32>, &str)> =
            violations.iter().map(|v| (v.shard, v.rule)).collect();
        got.sort_unstable();
        let mut expected = expected;
        expected.sort_unstable();
        assert_eq!(got, expected, "{name}: {violations:#?}");
        assert!(
            violations.iter().any(|v| v.to_string().contains(text)) || text.is_empty(),
            "{name}: {violations:#?}"
        );
    }
}

#[test]
fn check_messages_name_the_numbers() {
    let (nodes, mut map) = small_map();
    map[0].voters = vec![1, 2, 3];
    let text: Vec<String> = check(&nodes, &map, 3)
        .iter()
        .map(|v| v.to_string())
        .collect();
    assert_eq!(
        text,
        vec![
            "shard 0: dc-majority: dc1 holds 2 of 3 voters (nodes 1, 2); a datacenter may hold at most 1",
            "shard 0: dc-spread: voters span 2 datacenter(s) (dc1, dc2); at least 3 are required",
        ]
    );
    let factor: Vec<String> = check(&nodes, &[], 2)
        .iter()
        .map(|v| v.to_string())
        .collect();
    assert_eq!(
        factor,
        vec!["replication-factor: replication factor 2 is not an odd number of at least 3"]
    );
}

#[test]
fn a_joining_node_takes_its_share_of_its_datacenter() {
    let mut nodes = cluster(&[2, 2, 2]);
    let mut map = initial_placement(&nodes, 64, 3).unwrap();
    let leaders_before: Vec<NodeId> = map.iter().map(|e| e.voters[0]).collect();
    nodes.push(NodeDesc {
        id: 7,
        dc: "dc1".into(),
        state: NodeState::Active,
    });
    assert_clean(&nodes, &map, 3, "after join");

    let moves = rebalance(&nodes, &mut map, 3, 200);
    // R=3 over three datacenters pins dc1 to 64 replicas, now over 3 nodes: 21, 21, 22. A node
    // elsewhere (32) cannot give to node 7 without dc1 holding two voters of a shard.
    let counts = replica_counts(&nodes, &map);
    assert!((21..=22).contains(&counts[&7]), "{counts:?}");
    assert_eq!(by_dc(&nodes, &counts)["dc1"].iter().sum::<usize>(), 64);
    assert_replicas_even_within_dcs(&nodes, &map, "after join");
    assert_eq!(moves.len(), counts[&7], "every move lands on the new node");
    for mv in &moves {
        assert!(
            matches!(
                mv,
                Move::Replace {
                    from: 1 | 2,
                    to: 7,
                    ..
                }
            ),
            "{mv:?}"
        );
    }
    let leaders_after: Vec<NodeId> = map.iter().map(|e| e.voters[0]).collect();
    assert_eq!(
        leaders_after, leaders_before,
        "non-leader replicas move first"
    );

    // The new node then takes its share of dc1's leaderships.
    assert!(apply_leader_moves(&nodes, &mut map) > 0);
    assert_clean(&nodes, &map, 3, "after leader moves");
    assert_leaders_even(&nodes, &map, "after join");
    assert!(leader_counts(&nodes, &map)[&7] >= 7);
    assert_eq!(preferred_leader_moves(&nodes, &map), vec![]);
}

#[test]
fn a_draining_node_hands_over_leaderships_then_replicas() {
    let mut nodes = cluster(&[2, 2, 2]);
    let mut map = initial_placement(&nodes, 64, 3).unwrap();
    set_state(&mut nodes, 1, NodeState::Draining);
    assert_clean(&nodes, &map, 3, "draining is not a breach");

    // Leadership first, the way a node stops being leader before its data leaves.
    let moves = preferred_leader_moves(&nodes, &map);
    assert!(moves
        .iter()
        .all(|&(shard, to)| to != 1 && map[shard as usize].voters.contains(&to)));
    apply_leader_moves(&nodes, &mut map);
    assert_eq!(map.iter().filter(|e| e.voters[0] == 1).count(), 0);
    assert_leaders_even(&nodes, &map, "after leader drain");

    let moves = rebalance(&nodes, &mut map, 3, 200);
    assert_eq!(moves.len(), 32);
    assert!(moves
        .iter()
        .all(|mv| matches!(mv, Move::Replace { from: 1, to: 2, .. })));
    assert_eq!(map.iter().filter(|e| e.contains(1)).count(), 0);
    assert_eq!(preferred_leader_moves(&nodes, &map), vec![]);
}

#[test]
fn a_drain_without_leader_moves_still_empties_the_node() {
    let mut nodes = cluster(&[3, 3, 3]);
    let mut map = initial_placement(&nodes, 64, 3).unwrap();
    set_state(&mut nodes, 2, NodeState::Draining);
    rebalance(&nodes, &mut map, 3, 200);
    assert_eq!(map.iter().filter(|e| e.contains(2)).count(), 0);
    assert_replicas_even_within_dcs(&nodes, &map, "after drain");
    apply_leader_moves(&nodes, &mut map);
    assert_clean(&nodes, &map, 3, "after leader moves");
    assert_leaders_even(&nodes, &map, "after drain");
}

#[test]
fn a_drain_crosses_datacenters_when_the_rules_allow() {
    // Four datacenters of one node: node 1's replicas can only go to whichever datacenter the
    // shard does not use yet.
    let mut nodes = cluster(&[1, 1, 1, 1]);
    let mut map = initial_placement(&nodes, 64, 3).unwrap();
    set_state(&mut nodes, 1, NodeState::Draining);
    rebalance(&nodes, &mut map, 3, 200);
    assert_eq!(map.iter().filter(|e| e.contains(1)).count(), 0);
    assert_eq!(
        replica_counts(&nodes, &map)
            .values()
            .copied()
            .collect::<Vec<_>>(),
        vec![64, 64, 64]
    );
}

#[test]
fn a_drain_that_would_break_the_rules_stops() {
    // 3 x 1: no node can take node 1's replicas without a datacenter holding two voters.
    let mut nodes = cluster(&[1, 1, 1]);
    let map = initial_placement(&nodes, 8, 3).unwrap();
    set_state(&mut nodes, 1, NodeState::Draining);
    assert_eq!(plan_move(&nodes, &map, 3), None);
}

#[test]
fn removed_and_unregistered_nodes_are_replaced() {
    let mut nodes = cluster(&[3, 3, 3]);
    let mut map = initial_placement(&nodes, 64, 3).unwrap();
    set_state(&mut nodes, 4, NodeState::Removed);
    nodes.retain(|n| n.id != 8);
    let broken = check(&nodes, &map, 3);
    assert!(broken.iter().any(|v| v.rule == rule::REMOVED_NODE));
    assert!(broken.iter().any(|v| v.rule == rule::UNKNOWN_NODE));

    // Each move repairs one voter; the map is clean once the planner is done.
    let mut steps = 0;
    while let Some(mv) = plan_move(&nodes, &map, 3) {
        assert!(apply_move(&mut map, &mv));
        steps += 1;
        assert!(steps <= 200);
    }
    assert_clean(&nodes, &map, 3, "after repair");
    assert_replicas_even_within_dcs(&nodes, &map, "after repair");
}

#[test]
fn shards_with_a_change_in_flight_are_left_alone() {
    let mut nodes = cluster(&[2, 2, 2]);
    let mut map = initial_placement(&nodes, 4, 3).unwrap();
    set_state(&mut nodes, 1, NodeState::Draining);
    let first = map.iter().position(|e| e.contains(1)).unwrap();
    map[first].learners.push(2);
    let Some(Move::Replace {
        shard,
        from: 1,
        to: 2,
    }) = plan_move(&nodes, &map, 3)
    else {
        panic!("expected a move off node 1");
    };
    assert_ne!(shard, map[first].shard);
}

#[test]
fn balancing_moves_replicas_across_datacenters_when_legal() {
    // Four datacenters of one node and R=3: a fifth datacenter's new node can take a replica
    // of any shard that does not use dc5 yet, which is every shard.
    let mut nodes = cluster(&[1, 1, 1, 1]);
    let mut map = initial_placement(&nodes, 64, 3).unwrap();
    nodes.push(NodeDesc {
        id: 5,
        dc: "dc5".into(),
        state: NodeState::Active,
    });
    rebalance(&nodes, &mut map, 3, 200);
    let counts = replica_counts(&nodes, &map);
    assert!(spread(counts.values()) <= 1, "{counts:?}");
    apply_leader_moves(&nodes, &mut map);
    assert_clean(&nodes, &map, 3, "after leader moves");
    assert_leaders_even(&nodes, &map, "five datacenters");
}

#[test]
fn apply_move_keeps_ranks() {
    let mut map = vec![ShardReplicas {
        shard: 0,
        voters: vec![1, 3, 5],
        learners: vec![7],
    }];
    assert!(apply_move(
        &mut map,
        &Move::Replace {
            shard: 0,
            from: 1,
            to: 2
        }
    ));
    assert_eq!(
        map[0].voters,
        vec![2, 3, 5],
        "the new node keeps the preferred-leader rank"
    );
    assert!(apply_move(
        &mut map,
        &Move::Replace {
            shard: 0,
            from: 7,
            to: 8
        }
    ));
    assert_eq!(map[0].learners, vec![8]);
    assert!(apply_move(
        &mut map,
        &Move::PromoteLeader { shard: 0, to: 5 }
    ));
    assert_eq!(map[0].voters, vec![5, 3, 2]);
    assert!(!apply_move(
        &mut map,
        &Move::Replace {
            shard: 0,
            from: 9,
            to: 4
        }
    ));
    assert!(!apply_move(
        &mut map,
        &Move::PromoteLeader { shard: 1, to: 3 }
    ));
    assert_eq!(
        map[0],
        ShardReplicas {
            shard: 0,
            voters: vec![5, 3, 2],
            learners: vec![8]
        }
    );
}

#[test]
fn safe_to_stop_needs_a_majority_of_every_shard() {
    let small = cluster(&[1, 1, 1]);
    let small_map = initial_placement(&small, 8, 3).unwrap();
    let wide = cluster(&[2, 2, 2]);
    let wide_map = initial_placement(&wide, 64, 3).unwrap();
    let shards_with = |id: NodeId| wide_map.iter().filter(|e| e.contains(id)).count();
    let mut node3_removed = wide.clone();
    set_state(&mut node3_removed, 3, NodeState::Removed);
    // (name, nodes, map, stopping, down, unsafe shards)
    type Case<'a> = (
        &'static str,
        &'a [NodeDesc],
        &'a [ShardReplicas],
        &'static [NodeId],
        &'static [NodeId],
        usize,
    );
    let cases: Vec<Case> = vec![
        ("3 x 1, stop one", &small, &small_map, &[1], &[], 0),
        ("3 x 1, stop two", &small, &small_map, &[1, 2], &[], 8),
        (
            "3 x 1, stop one while one is down",
            &small,
            &small_map,
            &[1],
            &[2],
            8,
        ),
        (
            "3 x 1, stop nothing while one is down",
            &small,
            &small_map,
            &[],
            &[2],
            0,
        ),
        ("3 x 2, stop dc1", &wide, &wide_map, &[1, 2], &[], 0),
        (
            "3 x 2, stop dc1 while node 3 is down",
            &wide,
            &wide_map,
            &[1, 2],
            &[3],
            shards_with(3),
        ),
        (
            "3 x 2, stop dc1 while node 3 is removed",
            &node3_removed,
            &wide_map,
            &[1, 2],
            &[],
            shards_with(3),
        ),
        (
            "3 x 2, stop dc1 while its own node is down",
            &wide,
            &wide_map,
            &[1],
            &[2],
            0,
        ),
    ];
    for (name, nodes, map, stopping, down, unsafe_shards) in cases {
        let reasons = safe_to_stop(nodes, map, stopping, down);
        assert_eq!(reasons.len(), unsafe_shards, "{name}: {reasons:#?}");
    }
    let reasons = safe_to_stop(&small, &small_map, &[1], &[2]);
    assert_eq!(
        reasons[0],
        "shard 0: only 1 of 3 voters would stay up, 2 needed for a majority (stopping 1; already down 2)"
    );
}

#[test]
fn every_small_layout_places_cleanly_and_survives_a_join_and_a_drain() {
    // Every 3- and 4-datacenter layout of 1..=3 nodes per datacenter, R = 3 and 5.
    let mut layouts: Vec<Vec<usize>> = Vec::new();
    for a in 1..=3 {
        for b in 1..=3 {
            for c in 1..=3 {
                layouts.push(vec![a, b, c]);
                layouts.push(vec![a, b, c, 1]);
            }
        }
    }
    for sizes in &layouts {
        for replicas in [3, 5] {
            for shards in [1, 5, 64] {
                let name = format!("{sizes:?} R={replicas} shards={shards}");
                let mut nodes = cluster(sizes);
                let Ok(mut map) = initial_placement(&nodes, shards, replicas) else {
                    let capacity: usize = sizes.iter().map(|&s| s.min(replicas as usize / 2)).sum();
                    assert!(capacity < replicas as usize, "{name} was refused");
                    continue;
                };
                assert_clean(&nodes, &map, replicas, &name);
                assert_replicas_even_within_dcs(&nodes, &map, &name);
                if sizes.len() == 3 {
                    // Every shard spans every datacenter, so datacenter leader counts are even.
                    assert_leaders_even(&nodes, &map, &name);
                }
                assert_eq!(plan_move(&nodes, &map, replicas), None, "{name}");
                assert_eq!(preferred_leader_moves(&nodes, &map), vec![], "{name}");

                let joined = nodes.len() as NodeId + 1;
                nodes.push(NodeDesc {
                    id: joined,
                    dc: "dc2".into(),
                    state: NodeState::Active,
                });
                rebalance(&nodes, &mut map, replicas, 500);
                assert_replicas_even_within_dcs(&nodes, &map, &format!("{name} after join"));

                set_state(&mut nodes, 1, NodeState::Draining);
                rebalance(&nodes, &mut map, replicas, 500);
                apply_leader_moves(&nodes, &mut map);
                assert_clean(&nodes, &map, replicas, &format!("{name} after drain"));
                assert!(
                    map.iter().all(|e| e.voters[0] != 1),
                    "{name}: node 1 still leads"
                );
                // Node 1 empties whenever the nodes left could hold a fresh map.
                if initial_placement(&nodes, shards, replicas).is_ok() {
                    assert!(
                        map.iter().all(|e| !e.contains(1)),
                        "{name}: node 1 still holds replicas"
                    );
                }
                assert_replicas_even_within_dcs(&nodes, &map, &format!("{name} after drain"));
                if sizes.len() == 3 {
                    assert_leaders_even(&nodes, &map, &format!("{name} after drain"));
                }
            }
        }
    }
}

#[test]
fn leader_plans_converge_when_applied_one_move_at_a_time() {
    // The node applies the first planned leader move, then plans again. Each move must bring
    // the map one move closer, so the count of moves equals the first plan's length.
    let layouts: &[&[usize]] = &[
        &[2, 2, 2],
        &[3, 3, 3],
        &[3, 1, 2],
        &[2, 3, 2, 1],
        &[1, 1, 1, 1],
    ];
    for &sizes in layouts {
        for replicas in [3, 5] {
            for drained in [1, 2, 3] {
                let name = format!("{sizes:?} R={replicas} draining {drained}");
                let mut nodes = cluster(sizes);
                let Ok(mut map) = initial_placement(&nodes, 64, replicas) else {
                    continue;
                };
                let joined = nodes.len() as NodeId + 1;
                nodes.push(NodeDesc {
                    id: joined,
                    dc: "dc1".into(),
                    state: NodeState::Active,
                });
                rebalance(&nodes, &mut map, replicas, 200);
                set_state(&mut nodes, drained, NodeState::Draining);

                let mut batch_map = map.clone();
                let planned = apply_leader_moves(&nodes, &mut batch_map);
                let mut applied = 0;
                while let Some(&(shard, to)) = preferred_leader_moves(&nodes, &map).first() {
                    assert!(apply_move(&mut map, &Move::PromoteLeader { shard, to }));
                    applied += 1;
                    assert!(
                        applied <= planned,
                        "{name}: more moves than the {planned} planned"
                    );
                }
                assert_eq!(applied, planned, "{name}");
                // Both ways end at an optimum: the same datacenter spread, the same sum of
                // squares over nodes, and nothing left to do.
                let shape = |m: &[ShardReplicas]| {
                    let counts = leader_counts(&nodes, m);
                    let mut totals = dc_totals(&nodes, &counts);
                    totals.sort_unstable();
                    (totals, counts.values().map(|c| c * c).sum::<usize>())
                };
                assert_eq!(shape(&map), shape(&batch_map), "{name}");
                assert_eq!(preferred_leader_moves(&nodes, &batch_map), vec![], "{name}");
                assert!(map.iter().all(|e| e.voters[0] != drained), "{name}");
            }
        }
    }
}
