//! The `cluster` command line: `cluster up [options]` starts the whole cluster on this
//! machine; the hidden `cluster replica` and `cluster coordinator` run one node (the launcher
//! re-executes itself with them). Arguments are parsed by hand: there are five options, and
//! the launcher stays free of a CLI framework.

use crate::launcher::{Cluster, ClusterSpec, Output, ENGINES, SHUTDOWN_GRACE};
use crate::manifest::Role;
use crate::roles::{self, NodeRole};
use anyhow::Context;
use common::topology::Topology;
use std::path::PathBuf;
use std::process::ExitCode;

/// The default topology file, relative to the repository root.
pub const DEFAULT_TOPOLOGY: &str = "env/topology.toml";
/// The folder of `cluster up`'s files (nginx prefix, manifest, data), relative to the
/// current directory: inside `target/`, so `cargo clean` removes it and git ignores it.
pub const WORK_DIR: &str = "target/cluster";
/// The default engine of `cluster up`: the embedded durable store.
pub const DEFAULT_ENGINE: &str = "log";

/// What `cluster --help` prints.
pub const USAGE: &str = "\
usage: cluster up [options]

Starts the whole cluster on this machine: every replica and coordinator of every service
in the topology, and nginx as the gateway. Ctrl-C or SIGTERM stops it.

options:
  --topology FILE      topology to run (default: env/topology.toml)
  --gateway-port N     listen on port N instead of the topology's gateway port
  --data-dir DIR       the replicas' data, DIR/<service>-<id> (default: target/cluster/data)
  --engine ENGINE      storage engine of the replicas: log (default), redb, memory, or mongo
                       (one SecantusDB server per replica, role store in the manifest)
  --keep-dead          do not restart a process that dies
  --node-exe FILE      binary that runs the nodes (default: this one; for tests)
";

/// The options of `cluster up`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpArgs {
    /// Topology file.
    pub topology: PathBuf,
    /// Overrides the gateway's port.
    pub gateway_port: Option<u16>,
    /// Parent folder of the replicas' data.
    pub data_dir: PathBuf,
    /// Storage engine of the replicas.
    pub engine: String,
    /// Leave dead processes down.
    pub keep_dead: bool,
    /// The binary that runs the nodes; `None` re-executes this one.
    pub node_exe: Option<PathBuf>,
}

impl Default for UpArgs {
    fn default() -> UpArgs {
        UpArgs {
            topology: DEFAULT_TOPOLOGY.into(),
            gateway_port: None,
            data_dir: PathBuf::from(WORK_DIR).join("data"),
            engine: DEFAULT_ENGINE.into(),
            keep_dead: false,
            node_exe: None,
        }
    }
}

/// A parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cli {
    /// `cluster up`.
    Up(UpArgs),
    /// `cluster replica|coordinator`: run one node.
    Node(NodeRole),
    /// `cluster --help`.
    Help,
}

/// Parses the arguments after the program name. Options take their value as the next
/// argument or after `=`.
pub fn parse(args: &[String]) -> Result<Cli, String> {
    let Some(cmd) = args.first() else { return Err("missing command".into()) };
    if let Some(role) = NodeRole::parse(cmd) {
        return match args.len() {
            1 => Ok(Cli::Node(role)),
            _ => Err(format!("{cmd} takes no arguments (it is configured by APP__* variables)")),
        };
    }
    match cmd.as_str() {
        "-h" | "--help" | "help" => return Ok(Cli::Help),
        "up" => {}
        _ => return Err(format!("unknown command '{cmd}'")),
    }
    let mut up = UpArgs::default();
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (arg.as_str(), None),
        };
        let mut value = || inline.clone().or_else(|| rest.next().cloned()).ok_or(format!("{name} needs a value"));
        match name {
            "--topology" => up.topology = value()?.into(),
            "--gateway-port" => {
                let v = value()?;
                up.gateway_port = Some(v.parse().map_err(|_| format!("--gateway-port: '{v}' is not a port"))?);
            }
            "--data-dir" => up.data_dir = value()?.into(),
            "--engine" => {
                let v = value()?;
                if !ENGINES.contains(&v.as_str()) {
                    return Err(format!("--engine: '{v}' is not one of {}", ENGINES.join(", ")));
                }
                up.engine = v;
            }
            "--node-exe" => up.node_exe = Some(value()?.into()),
            "--keep-dead" if inline.is_none() => up.keep_dead = true,
            "-h" | "--help" => return Ok(Cli::Help),
            _ => return Err(format!("unknown option '{arg}'")),
        }
    }
    Ok(Cli::Up(up))
}

/// Runs `cluster up` until SIGTERM or Ctrl-C.
pub fn up(args: UpArgs) -> anyhow::Result<()> {
    common::logging::init("cluster");
    let mut topology = Topology::load(&args.topology).with_context(|| {
        format!("run from the repository root or pass --topology (looked for {})", args.topology.display())
    })?;
    if let Some(port) = args.gateway_port {
        topology.gateway = crate::ports::with_port(&topology.gateway, port)?;
    }
    let node_exe = match args.node_exe {
        Some(p) => p,
        None => std::env::current_exe().context("finding this binary")?,
    };
    let data_dir = args.data_dir.clone();
    let spec = ClusterSpec {
        topology,
        work_dir: WORK_DIR.into(),
        data_dir: args.data_dir,
        engine: args.engine,
        node_exe,
        keep_dead: args.keep_dead,
        output: Output::Inherit,
        env: vec![],
    };
    // Signals are caught only once the cluster runs: until then the default action ends
    // the launcher and the kernel kills the children it started (PR_SET_PDEATHSIG). They are
    // caught before the lines that say it runs: a SIGTERM sent as soon as "gateway:" appears
    // must stop the cluster, not kill the launcher with the default action.
    let cluster = Cluster::start(spec)?;
    let stop = StopSignals::catch()?;
    for e in &cluster.manifest().processes {
        let what = match e.role {
            Role::Balancer => "nginx".to_string(),
            _ => format!("{} {} {}", e.service, e.role.name(), e.id),
        };
        println!("started {what:<24} {:<22} pid {}", e.addr, e.pid);
    }
    print!(
        "{}",
        summary(&Where {
            gateway: &cluster.gateway_url(),
            topology: cluster.topology(),
            data_dir: &data_dir,
            manifest: cluster.manifest_path(),
            nginx_log: &cluster.nginx_error_log(),
            pid: std::process::id(),
        })
    );
    stop.wait();
    println!("stopping");
    cluster.shutdown(SHUTDOWN_GRACE);
    Ok(())
}

/// What a person needs once `cluster up` runs.
pub struct Where<'a> {
    /// The gateway's URL.
    pub gateway: &'a str,
    /// The topology (the coordinators' addresses).
    pub topology: &'a Topology,
    /// The replicas' data.
    pub data_dir: &'a std::path::Path,
    /// The launcher's manifest.
    pub manifest: &'a std::path::Path,
    /// nginx's error log.
    pub nginx_log: &'a std::path::Path,
    /// The launcher's pid.
    pub pid: u32,
}

/// What `cluster up` prints once every process answers: where to send requests, where each
/// service's status page is, where the data and logs are, and how to stop. The first line is
/// `gateway: URL` (tools read it).
pub fn summary(w: &Where) -> String {
    let mut s = format!("gateway: {}\n", w.gateway);
    s.push_str(&format!("the cluster runs; try: curl -X POST {}/payment/create_user\n", w.gateway));
    s.push_str("status pages (members, views, roots, anti-entropy):\n");
    for svc in common::topology::Service::ALL {
        if let Some(c) = w.topology.nodes(svc).coordinators.first() {
            s.push_str(&format!("  {:<9}http://{c}/admin/status\n", svc.name()));
        }
    }
    s.push_str(&format!("data:      {} (a folder per replica)\n", w.data_dir.display()));
    s.push_str(&format!(
        "logs:      here, each line tagged with its process; nginx's errors in {}\n",
        w.nginx_log.display()
    ));
    s.push_str(&format!("processes: {}\n", w.manifest.display()));
    s.push_str(&format!("stop:      Ctrl-C, or kill -TERM {}\n", w.pid));
    s
}

/// SIGTERM and Ctrl-C (SIGINT), caught from the moment [`StopSignals::catch`] returns.
struct StopSignals {
    rt: tokio::runtime::Runtime,
    term: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn catch() -> anyhow::Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (term, interrupt) = {
            let _in_rt = rt.enter();
            (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?)
        };
        Ok(StopSignals { rt, term, interrupt })
    }

    /// Blocks until one of them arrives.
    fn wait(self) {
        let StopSignals { rt, mut term, mut interrupt } = self;
        rt.block_on(async {
            tokio::select! {
                _ = term.recv() => log::info!("SIGTERM"),
                _ = interrupt.recv() => {}
            }
        });
    }
}

/// The whole main of the `cluster` binary.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match parse(&args) {
        Ok(Cli::Up(up_args)) => up(up_args),
        Ok(Cli::Node(role)) => roles::run_role(role),
        Ok(Cli::Help) => {
            print!("{USAGE}");
            Ok(())
        }
        Err(msg) => {
            eprint!("cluster: {msg}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cluster: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Cli, String> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn the_summary_says_where_everything_is() {
        let t = Topology::local(3, 2, &mut (9000..));
        let s = summary(&Where {
            gateway: "http://127.0.0.1:9000",
            topology: &t,
            data_dir: std::path::Path::new("target/cluster/data"),
            manifest: std::path::Path::new("target/cluster/manifest.json"),
            nginx_log: std::path::Path::new("target/cluster/nginx/logs/error.log"),
            pid: 42,
        });
        assert_eq!(s.lines().next(), Some("gateway: http://127.0.0.1:9000"), "tools read the first line");
        for svc in common::topology::Service::ALL {
            let page = format!("http://{}/admin/status", t.nodes(svc).coordinators[0]);
            assert!(s.contains(&page), "{svc}'s status page in:\n{s}");
        }
        for want in ["target/cluster/data", "manifest.json", "error.log", "kill -TERM 42", "create_user"] {
            assert!(s.contains(want), "{want} in:\n{s}");
        }
    }

    #[test]
    fn up_defaults() {
        assert_eq!(p(&["up"]).unwrap(), Cli::Up(UpArgs::default()));
        let d = UpArgs::default();
        assert_eq!(d.topology, PathBuf::from("env/topology.toml"));
        assert_eq!(d.data_dir, PathBuf::from("target/cluster/data"));
        assert_eq!(d.engine, "log");
    }

    #[test]
    fn up_with_every_option() {
        let want = UpArgs {
            topology: "t.toml".into(),
            gateway_port: Some(8080),
            data_dir: "/d".into(),
            engine: "memory".into(),
            keep_dead: true,
            node_exe: Some("/bin/node".into()),
        };
        let spaced = [
            "up",
            "--topology",
            "t.toml",
            "--gateway-port",
            "8080",
            "--data-dir",
            "/d",
            "--engine",
            "memory",
            "--keep-dead",
            "--node-exe",
            "/bin/node",
        ];
        assert_eq!(p(&spaced).unwrap(), Cli::Up(want.clone()));
        let inline = [
            "up",
            "--topology=t.toml",
            "--gateway-port=8080",
            "--data-dir=/d",
            "--engine=memory",
            "--keep-dead",
            "--node-exe=/bin/node",
        ];
        assert_eq!(p(&inline).unwrap(), Cli::Up(want));
    }

    #[test]
    fn node_roles() {
        assert_eq!(p(&["replica"]).unwrap(), Cli::Node(NodeRole::Replica));
        assert_eq!(p(&["coordinator"]).unwrap(), Cli::Node(NodeRole::Coordinator));
        assert!(p(&["replica", "--x"]).is_err());
    }

    #[test]
    fn refuses_bad_command_lines() {
        for bad in [
            &[][..],
            &["down"],
            &["up", "--gateway-port"],
            &["up", "--gateway-port", "70000"],
            &["up", "--gateway-port", "x"],
            &["up", "--engine", "mongodb"],
            &["up", "--keep-dead=yes"],
            &["up", "--verbose"],
            &["up", "extra"],
        ] {
            assert!(p(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(p(&["--help"]).unwrap(), Cli::Help);
        assert_eq!(p(&["up", "-h"]).unwrap(), Cli::Help);
    }
}
