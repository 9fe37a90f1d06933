//! Logging setup: `log` + `env_logger`, `info` unless `RUST_LOG` says otherwise, every line
//! tagged with the process's role so that a launcher's merged output stays readable.
//! actix's server start-up lines ("starting 1 workers", "Tokio runtime found") are below the
//! default level: `RUST_LOG=actix_server=info` brings them back.

use std::io::Write;

/// The filter a process logs by: actix's server at `warn`, then `RUST_LOG` (default `info`),
/// whose own directives win (a later directive for the same module replaces an earlier one).
pub fn directives(rust_log: Option<&str>) -> String {
    format!("actix_server=warn,{}", rust_log.filter(|s| !s.trim().is_empty()).unwrap_or("info"))
}

/// Initializes logging for a process called `role` (e.g. `stock-replica-1`).
pub fn init(role: &str) {
    let role = role.to_string();
    let filters = directives(std::env::var("RUST_LOG").ok().as_deref());
    let _ = env_logger::Builder::new()
        .parse_filters(&filters)
        .format(move |buf, rec| writeln!(buf, "{} {:<5} {} {}", buf.timestamp_millis(), rec.level(), role, rec.args()))
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Log;

    #[test]
    fn actix_start_up_chatter_is_below_the_default_level_unless_asked_for() {
        assert_eq!(directives(None), "actix_server=warn,info");
        assert_eq!(directives(Some("")), "actix_server=warn,info");
        assert_eq!(directives(Some("debug")), "actix_server=warn,debug");
        let asked = directives(Some("info,actix_server=info"));
        let f = env_logger::Builder::new().parse_filters(&asked).build();
        let meta = |target| log::Metadata::builder().level(log::Level::Info).target(target).build();
        assert!(f.enabled(&meta("actix_server::builder")), "{asked}");
        let default = env_logger::Builder::new().parse_filters(&directives(None)).build();
        assert!(!default.enabled(&meta("actix_server::builder")));
        assert!(default.enabled(&meta("replica::node")));
    }
}
