//! `bongsu-node`: run a node, or bootstrap and operate a cluster (see [`bongsu_node::cli`]).
//! Failpoints and fault rules cannot be switched on in this binary.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    bongsu_node::cli::main()
}
