//! `bongsu-node-chaos`: the node with failpoints and network fault rules armed, for chaos and
//! cluster tests only. The same code as `bongsu-node`; the admin API's `SetFailpoint` and
//! `SetFaults` work here and are refused there. `make run` runs the plain binary.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    bongsu_raft_store::failpoints::arm();
    bongsu_node::cli::main()
}
