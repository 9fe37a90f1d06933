//! How a replica's MongoDB-compatible server is run: its program and its arguments. The local
//! launcher, the tests and the container deployments (`build_compose`) start it the same way;
//! the engine that talks to it is `store::mongo`.

/// The server the tests and the local launcher run: SecantusDB's Rust build `secantusd-rs`
/// (crates.io `secantus-mdb`, installed by scripts/install-deps.sh; docs/design.md §7.2). It is
/// GPL software: it always runs as a separate process and is never linked. Its Python build
/// `secantusd-py` takes the same options (`SECANTUSD=secantusd-py`) but is too slow for the
/// course scenario (docs/storage-engines.md, "The MongoDB-compatible server").
pub const SERVER_PROGRAM: &str = "secantusd-rs";

/// WiredTiger cache of one local server: the default (1 GB) times one server per replica
/// would be most of a small machine's memory; the tests' data is a few megabytes.
pub const SERVER_CACHE: &str = "64M";

/// The arguments that run the server on `host:port` with its data in `data` (created if
/// missing), logging warnings only, with the [`SERVER_CACHE`] cache and every commit synced
/// to disk (`--sync-on-commit`: without it SecantusDB acknowledges a `j: true` write before
/// its log is synced, which breaks the promise that an acknowledged write is durable).
pub fn server_args(host: &str, port: u16, data: &std::path::Path) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> =
        ["--host", host, "--port", &port.to_string(), "--log-level", "WARNING"].iter().map(Into::into).collect();
    args.extend(["--cache-size", SERVER_CACHE, "--sync-on-commit", "--storage-path"].iter().map(Into::into));
    args.push(data.as_os_str().to_owned());
    args
}
