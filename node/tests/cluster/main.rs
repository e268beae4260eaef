//! Cluster tests: real `bongsu-node` processes on loopback, each datacenter an address group
//! (`127.0.<dc>.<node>`), driven through the nodes' internal and admin gRPC APIs.
//!
//! - [`harness`] is the test kit's cluster (`bongsu_testkit`) running this package's node, and
//!   the node's placement rules applied to recorded shard maps; the kit also has the client
//!   (`bongsu_testkit::client`), the writers and the checkers that judge what they wrote;
//! - [`basic`] checks messaging end to end and replica placement over datacenters;
//! - [`failover`] SIGKILLs shard leaders under a continuous write load and checks that writes
//!   resume and nothing acknowledged is lost;
//! - [`large`] sends 60 KB messages at full speed through a voter's loss and return: writes
//!   never pause for a second, replication requests stay bounded in bytes;
//! - [`join`] adds a node under a continuous write load and checks that it takes its share of
//!   replicas with the placement rules holding in every shard map version;
//! - [`drain`] drains a node under a continuous write load and checks that it ends with
//!   nothing, and that a drain that could never finish is refused;
//! - [`users`] creates accounts and resolves them, checks that members' conversation lists
//!   follow membership changes through the cross-shard outbox, that a user's shard streams
//!   JOINED and READ events, and that the shard map carries a signing key;
//! - [`transfer`] cancels a leader transfer's admin call mid-way and checks that the group is
//!   not left refusing writes;
//! - [`wiped`] brings a voter back with a wiped disk under its old id and shows that it never
//!   votes, so a committed entry survives (and, with the check switched off, that it is lost),
//!   and that it is refused when it asks to join;
//! - [`snapshot`] feeds a follower a shard sixteen times the snapshot memory budget by snapshot
//!   and checks both ends' peak memory, read from `/proc`;
//! - [`strangers`] tries every kind of call on a node's three ports without a certificate of
//!   the cluster's CA, and with each role's: strangers are refused at the handshake, each role
//!   reaches only its calls, and a node's certificate speaks only for that node;
//! - [`upgrade`] upgrades a cluster of the previous release one node at a time under a write
//!   load, and checks that a new command waits for the cluster version.
//!
//! Cluster tests take turns (a file lock), so that one does not skew another's timing.

mod basic;
mod drain;
mod failover;
mod harness;
mod join;
mod large;
mod snapshot;
mod strangers;
mod subscribe;
mod transfer;
mod upgrade;
mod users;
mod wiped;
