//! The nginx config of the gateway, rendered from the topology and the template
//! `gateway/nginx.conf.tmpl` (docs/design.md §2.3).
//!
//! Per service one upstream of all its coordinators and one location that passes the
//! service's public prefix (`/orders/`, `/payment/`, `/stock/`) to it unchanged; every other
//! path is a 404 at the gateway. The local launcher (`cluster up`) and the compose generator
//! both render through here, so the gateway is configured in one place.

use model::topology::{Service, Topology};
use model::wire::SECRET;

/// The template, with `{{name}}` placeholders.
pub const TEMPLATE: &str = include_str!("../nginx.conf.tmpl");

/// Idle connections nginx keeps open to each service's coordinators: enough for the
/// concurrency of a load test (a few hundred requests in flight), so requests do not pay a
/// TCP handshake each.
pub const UPSTREAM_KEEPALIVE: u32 = 256;

/// How long nginx keeps an idle upstream connection: below actix-web's default keep-alive
/// (5 s), so nginx drops an idle connection before the coordinator does, and never sends a
/// request on a connection the coordinator is closing at that moment.
pub const UPSTREAM_KEEPALIVE_TIMEOUT_S: u32 = 4;

/// Failed attempts (refused connection, error, timeout) after which nginx stops sending to a
/// coordinator for [`FAIL_TIMEOUT_S`]. More than one, so a single hiccup does not take a
/// coordinator out (with both out, nginx would answer 502 at once); a dead one still costs
/// only a few attempts, each retried on the other coordinator.
pub const MAX_FAILS: u32 = 3;

/// How long a coordinator that failed [`MAX_FAILS`] times is skipped, and the window those
/// failures are counted in: about as long as the launcher takes to restart a dead process.
pub const FAIL_TIMEOUT_S: u32 = 5;

/// How nginx is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// In the foreground under the local launcher, with a prefix directory (`nginx -p`)
    /// holding its pid file, error log and temporary files (paths in the config are relative
    /// to it, so the rendered file does not depend on where the prefix is). The directories
    /// in [`LOCAL_DIRS`] must exist in the prefix.
    Local,
    /// In the official nginx container: its own pid and temp paths, errors to stderr.
    Container,
}

/// Directories of the prefix that a [`Mode::Local`] config refers to and nginx does not
/// create itself.
pub const LOCAL_DIRS: [&str; 2] = ["logs", "temp"];

/// The error log of a [`Mode::Local`] config, relative to the prefix.
pub const LOCAL_ERROR_LOG: &str = "logs/error.log";

/// What the rendered config depends on besides the topology.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BalancerOptions {
    /// Address nginx listens on (`host:port`), e.g. the topology's gateway, or `0.0.0.0:8000`
    /// in a container.
    pub listen: String,
    /// How nginx is run.
    pub mode: Mode,
}

impl BalancerOptions {
    /// Options for the local launcher: listen on the topology's gateway address.
    pub fn local(topology: &Topology) -> BalancerOptions {
        BalancerOptions { listen: topology.gateway.clone(), mode: Mode::Local }
    }
}

/// The upstream name of a service's coordinators, e.g. `order_coordinators`.
pub fn upstream_name(s: Service) -> String {
    format!("{}_coordinators", s.name())
}

/// Main-context directives that depend on the mode.
fn process_block(mode: Mode) -> String {
    match mode {
        // One process, no master: the pid the launcher holds is the process that serves, so
        // a SIGKILL or SIGSTOP of it (fault tests) or the parent-death signal (the launcher
        // died) reaches the whole gateway. With a master, a killed master leaves its worker
        // running and holding the port. The launcher passes `-g 'daemon off;'`.
        Mode::Local => format!(
            "# Generated for the local launcher; run with nginx -p <prefix> -g 'daemon off;'.\n\
             master_process off;\n\
             pid logs/nginx.pid;\n\
             error_log {LOCAL_ERROR_LOG} warn;"
        ),
        // The image runs `nginx -g 'daemon off;'` and keeps its own pid file; docker collects
        // stderr.
        Mode::Container => "# Generated for the nginx container.\nerror_log stderr warn;".to_string(),
    }
}

/// http-context directives that depend on the mode.
fn http_block(mode: Mode) -> String {
    match mode {
        // Distributions compile in temp paths under /var/lib/nginx, which only root may write;
        // keep them in the prefix so the launcher also runs as an ordinary user.
        Mode::Local => ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
            .iter()
            .map(|t| format!("    {t}_temp_path temp/{t};\n"))
            .collect(),
        Mode::Container => String::new(),
    }
}

fn upstreams(t: &Topology) -> String {
    let block = |s: Service| {
        let servers: String = t
            .nodes(s)
            .coordinators
            .iter()
            .map(|addr| format!("        server {addr} max_fails={MAX_FAILS} fail_timeout={FAIL_TIMEOUT_S}s;\n"))
            .collect();
        format!(
            "    upstream {} {{\n{servers}        keepalive {UPSTREAM_KEEPALIVE};\n        \
             keepalive_timeout {UPSTREAM_KEEPALIVE_TIMEOUT_S}s;\n    }}\n",
            upstream_name(s)
        )
    };
    Service::ALL.map(block).join("\n")
}

/// The 404 the gateway answers for every path it does not route (an nginx directive).
const NOT_FOUND: &str = r#"return 404 "no such endpoint\n";"#;

fn locations() -> String {
    let block = |s: Service| {
        let (prefix, upstream) = (s.prefix(), upstream_name(s));
        // proxy_pass without a URI part passes the client's path unchanged. Without the exact
        // location, nginx would answer the bare prefix with a redirect to the prefixed one.
        format!(
            "        location /{prefix}/ {{\n            proxy_pass http://{upstream};\n        }}\n        \
             location = /{prefix} {{\n            {NOT_FOUND}\n        }}\n"
        )
    };
    Service::ALL.map(block).join("\n")
}

/// Renders the nginx config for `topology`.
pub fn render(topology: &Topology, options: &BalancerOptions) -> String {
    let out = TEMPLATE
        .replace("{{process}}", &process_block(options.mode))
        .replace("{{http}}", &http_block(options.mode))
        .replace("{{upstreams}}", &upstreams(topology))
        .replace("{{listen}}", &options.listen)
        .replace("{{secret_header}}", SECRET)
        .replace("{{locations}}", &locations())
        .replace("{{not_found}}", NOT_FOUND);
    debug_assert!(!out.contains("{{"), "a placeholder of the nginx template was not filled in");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn shipped() -> Topology {
        Topology::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../env/topology.toml")).unwrap()
    }

    /// The lines of a rendered config, trimmed, without comments and blank lines.
    fn lines(conf: &str) -> Vec<String> {
        conf.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string).collect()
    }

    /// The lines inside the block that starts with `head` (e.g. `upstream order_coordinators {`).
    fn block(conf: &str, head: &str) -> Vec<String> {
        let all = lines(conf);
        let start = all.iter().position(|l| l == head).unwrap_or_else(|| panic!("no block {head}"));
        let end = start + all[start..].iter().position(|l| l == "}").unwrap();
        all[start + 1..end].to_vec()
    }

    #[test]
    fn renders_the_shipped_topology() {
        let t = shipped();
        let conf = render(&t, &BalancerOptions::local(&t));
        assert!(!conf.contains("{{"), "unfilled placeholder:\n{conf}");
        let all = lines(&conf);
        for expected in [
            "worker_processes 1;",
            "master_process off;",
            "access_log off;",
            "error_log logs/error.log warn;",
            "listen 127.0.0.1:8000 backlog=4096;",
            "proxy_http_version 1.1;",
            "proxy_set_header Connection \"\";",
            "proxy_set_header X-Request-Id $webshop_request_id;",
            "proxy_set_header x-webshop-secret \"\";",
            "proxy_next_upstream error timeout non_idempotent;",
            "proxy_next_upstream_tries 2;",
            "proxy_read_timeout 65s;",
            "proxy_temp_path temp/proxy;",
        ] {
            assert!(all.iter().any(|l| l == expected), "missing `{expected}` in\n{conf}");
        }
        for s in Service::ALL {
            let up = block(&conf, &format!("upstream {s}_coordinators {{"));
            let mut want: Vec<String> =
                t.nodes(s).coordinators.iter().map(|a| format!("server {a} max_fails=3 fail_timeout=5s;")).collect();
            want.push("keepalive 256;".into());
            want.push("keepalive_timeout 4s;".into());
            assert_eq!(up, want);
            let loc = block(&conf, &format!("location /{}/ {{", s.prefix()));
            assert_eq!(loc, vec![format!("proxy_pass http://{s}_coordinators;")]);
            let bare = block(&conf, &format!("location = /{} {{", s.prefix()));
            assert_eq!(bare, ["return 404 \"no such endpoint\\n\";"]);
        }
        assert_eq!(block(&conf, "location / {"), vec!["return 404 \"no such endpoint\\n\";"]);
    }

    #[test]
    fn routes_only_the_three_public_prefixes() {
        let t = shipped();
        let conf = render(&t, &BalancerOptions::local(&t));
        let all = lines(&conf);
        let locs: Vec<&String> = all.iter().filter(|l| l.starts_with("location")).collect();
        let want = [
            "location /orders/ {",
            "location = /orders {",
            "location /payment/ {",
            "location = /payment {",
            "location /stock/ {",
            "location = /stock {",
            "location / {",
        ];
        assert_eq!(locs, want);
        assert!(!all.iter().any(|l| l.contains("/internal") || l.contains("/admin")));
    }

    #[test]
    fn container_mode_keeps_the_images_paths() {
        let t = Topology::local(3, 2, &mut (9000..));
        let conf = render(&t, &BalancerOptions { listen: "0.0.0.0:8000".into(), mode: Mode::Container });
        let all = lines(&conf);
        assert!(all.iter().any(|l| l == "listen 0.0.0.0:8000 backlog=4096;"));
        assert!(all.iter().any(|l| l == "error_log stderr warn;"));
        assert!(!conf.contains("master_process"));
        assert!(!conf.contains("temp_path"));
        assert!(!conf.contains("pid "));
        assert_eq!(block(&conf, "upstream payment_coordinators {").len(), 2 + 2);
    }
}
