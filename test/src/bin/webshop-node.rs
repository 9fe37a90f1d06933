//! `webshop-node replica|coordinator`: one node of the cluster, configured by `APP__*`, exactly
//! as `cluster replica|coordinator` runs it. It exists so that the whole-cluster tests get the
//! node binary from their own package (`env!("CARGO_BIN_EXE_webshop-node")` as
//! `cluster::ClusterSpec::node_exe`), built by the same `cargo test` that runs them.

fn main() -> std::process::ExitCode {
    cluster::roles::main()
}
