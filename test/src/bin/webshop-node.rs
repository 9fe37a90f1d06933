//! `webshop-node replica|coordinator`: one node of the cluster, configured by `APP__*`, exactly
//! as `cluster replica|coordinator` runs it. It exists so that the whole-cluster tests get the
//! node binary from their own package (`env!("CARGO_BIN_EXE_webshop-node")` as
//! `cluster::ClusterSpec::node_exe`), built by the same `cargo test` that runs them.

/// The same allocator as the `cluster` binary's nodes.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cluster::roles::main()
}
