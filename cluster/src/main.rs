//! `cluster`: `cluster up` starts the whole webshop on this machine (see `cluster --help`);
//! `cluster replica|coordinator` run one node, as the launcher starts them.

/// mimalloc instead of glibc's malloc: see the workspace manifest.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cluster::cli::main()
}
