//! Logging setup: `log` + `env_logger`, `info` unless `RUST_LOG` says otherwise, every line
//! tagged with the process's role so that a launcher's merged output stays readable.

use std::io::Write;

/// Initializes logging for a process called `role` (e.g. `stock-replica-1`).
pub fn init(role: &str) {
    let role = role.to_string();
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(move |buf, rec| writeln!(buf, "{} {:<5} {} {}", buf.timestamp_millis(), rec.level(), role, rec.args()))
        .try_init();
}
