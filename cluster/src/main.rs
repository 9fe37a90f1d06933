//! `cluster`: `cluster up` starts the whole webshop on this machine (see `cluster --help`);
//! `cluster replica|coordinator` run one node, as the launcher starts them.

fn main() -> std::process::ExitCode {
    cluster::cli::main()
}
