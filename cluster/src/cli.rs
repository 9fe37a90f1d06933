//! The `cluster` command line (clap): `cluster up [options]` starts the whole cluster on
//! this machine; `cluster admin ...` acts on a running one ([`crate::admin`]); the hidden
//! `cluster replica` and `cluster coordinator` run one node (the launcher re-executes itself
//! with them).

use crate::admin::Action;
use crate::launcher::{Cluster, ClusterSpec, Output, ENGINES, SHUTDOWN_GRACE};
use crate::manifest::Role;
use crate::roles::{self, NodeRole};
use anyhow::Context;
use clap::{Parser, Subcommand};
use model::topology::{Service, Topology};
use std::path::PathBuf;
use std::process::ExitCode;

/// The default topology file, relative to the repository root.
pub const DEFAULT_TOPOLOGY: &str = "env/topology.toml";
/// The folder of `cluster up`'s files that last one run (nginx prefix, manifest, topology,
/// secret), relative to the current directory: inside `target/`, which git ignores.
pub const WORK_DIR: &str = "target/cluster";
/// The default folder of the replicas' data, relative to the current directory: outside
/// `target/`, so that `cargo clean` leaves the database alone (git ignores it too).
pub const DEFAULT_DATA_DIR: &str = "data";
/// The default engine of `cluster up`: the embedded durable store.
pub const DEFAULT_ENGINE: &str = "log";

/// The command line.
#[derive(Clone, Debug, PartialEq, Eq, Parser)]
#[command(name = "cluster", about = "The webshop cluster on this machine: start it, look at it, act on it.")]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Clone, Debug, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Start every replica and coordinator of every service in the topology, and nginx as
    /// the gateway; Ctrl-C or SIGTERM stops them all.
    Up(UpArgs),
    /// Act on the cluster that `cluster up` runs from this folder (it finds the topology and
    /// the secret in target/cluster).
    Admin(AdminArgs),
    /// Run one replica (configured by APP__* variables; the launcher starts these).
    #[command(hide = true)]
    Replica,
    /// Run one coordinator (configured by APP__* variables; the launcher starts these).
    #[command(hide = true)]
    Coordinator,
}

/// The options of `cluster up`.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct UpArgs {
    /// Topology to run: node counts and addresses per service.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_TOPOLOGY)]
    pub topology: PathBuf,
    /// Listen on port N instead of the topology's gateway port.
    #[arg(long, value_name = "N")]
    pub gateway_port: Option<u16>,
    /// The replicas' data, one folder DIR/<service>-<id> per replica.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// The replicas' store: log (the embedded engine), memory (keeps nothing), or mongo (one SecantusDB server per replica, role
    /// store in the manifest).
    #[arg(long, default_value = DEFAULT_ENGINE, value_parser = clap::builder::PossibleValuesParser::new(ENGINES))]
    pub engine: String,
    /// Leave a process that dies down instead of restarting it.
    #[arg(long)]
    pub keep_dead: bool,
    /// The binary that runs the nodes (default: this one; for tests).
    #[arg(long, value_name = "FILE")]
    pub node_exe: Option<PathBuf>,
}

impl Default for UpArgs {
    fn default() -> UpArgs {
        UpArgs {
            topology: DEFAULT_TOPOLOGY.into(),
            gateway_port: None,
            data_dir: DEFAULT_DATA_DIR.into(),
            engine: DEFAULT_ENGINE.into(),
            keep_dead: false,
            node_exe: None,
        }
    }
}

/// `cluster admin`.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct AdminArgs {
    /// The running cluster's folder, where `cluster up` keeps its topology and secret.
    #[arg(long, value_name = "DIR", default_value = WORK_DIR, global = true)]
    pub work_dir: PathBuf,
    /// The action.
    #[command(subcommand)]
    pub action: AdminCommand,
}

/// The actions of `cluster admin`.
#[derive(Clone, Debug, PartialEq, Eq, Subcommand)]
pub enum AdminCommand {
    /// Every service's replicas: state, root digest, lag, the last anti-entropy round and the
    /// recent view changes (what the status page shows).
    Status,
    /// Take replica ID of SERVICE out of the view now. If it still answers, the prober
    /// re-admits it as a learner, brings it up to date and promotes it: a forced re-join.
    Evict {
        /// order, payment or stock.
        #[arg(value_parser = parse_service)]
        service: Service,
        /// The replica's id (its index in the topology's list).
        id: u32,
    },
    /// Run an anti-entropy round now on SERVICE, or on every service, and say what it found
    /// and repaired.
    AntiEntropy {
        /// order, payment or stock (default: all three, one after the other).
        #[arg(value_parser = parse_service)]
        service: Option<Service>,
    },
}

impl AdminCommand {
    /// The action it asks for.
    pub fn action(&self) -> Action {
        match *self {
            AdminCommand::Status => Action::Status,
            AdminCommand::Evict { service, id } => Action::Evict(service, id),
            AdminCommand::AntiEntropy { service } => Action::AntiEntropy(service),
        }
    }
}

fn parse_service(s: &str) -> Result<Service, String> {
    Service::parse(s).ok_or_else(|| format!("'{s}' is not a service (order, payment or stock)"))
}

/// Parses the arguments after the program name (clap's errors and help as its `Err`).
pub fn parse(args: &[String]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("cluster".to_string()).chain(args.iter().cloned()))
}

/// Runs `cluster up` until SIGTERM or Ctrl-C.
pub fn up(args: UpArgs) -> anyhow::Result<()> {
    net::logging::init("cluster");
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
            exe: &shown_exe(),
            secret: &cluster.work_dir().join(crate::launcher::SECRET_FILE),
        })
    );
    stop.wait();
    println!("stopping");
    cluster.shutdown(SHUTDOWN_GRACE);
    Ok(())
}

/// This binary's path as a person types it here: relative to the current folder when it is
/// below it (`target/release/cluster`).
fn shown_exe() -> String {
    let exe = std::env::current_exe().unwrap_or_else(|_| "cluster".into());
    let here = std::env::current_dir().unwrap_or_default();
    exe.strip_prefix(&here).map(|p| p.to_path_buf()).unwrap_or(exe).display().to_string()
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
    /// How to run this binary from here (for the admin commands).
    pub exe: &'a str,
    /// The file with the cluster secret.
    pub secret: &'a std::path::Path,
}

/// What `cluster up` prints once every process answers: where to send requests, where each
/// service's status page is, where the data and logs are, and how to stop. The first line is
/// `gateway: URL` (tools read it).
pub fn summary(w: &Where) -> String {
    let mut s = format!("gateway: {}\n", w.gateway);
    s.push_str(&format!("the cluster runs; try: curl -X POST {}/payment/create_user\n", w.gateway));
    // Any coordinator's page shows every service; the first order coordinator's is named.
    let first = model::topology::Service::ALL.iter().find_map(|&svc| w.topology.nodes(svc).coordinators.first());
    if let Some(c) = first {
        s.push_str(&format!(
            "status:    http://{c}/admin/status in a browser (every service: members, roots, lag, anti-entropy, view changes)\n"
        ));
    }
    s.push_str(&format!("data:      {} (a folder per replica)\n", w.data_dir.display()));
    s.push_str(&format!(
        "logs:      here, each line tagged with its process; nginx's errors in {}\n",
        w.nginx_log.display()
    ));
    s.push_str(&format!("processes: {}\n", w.manifest.display()));
    s.push_str(&format!(
        "admin:     {} admin status | evict SERVICE ID | anti-entropy (secret in {}, readable by you only)\n",
        w.exe,
        w.secret.display()
    ));
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
    let cli = match parse(&args) {
        Ok(cli) => cli,
        // Help and version go to stdout with status 0, mistakes to stderr with status 2.
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let result = match cli.command {
        Command::Up(up_args) => up(up_args),
        Command::Admin(a) => crate::admin::run(&a.work_dir, &a.action.action()).and_then(|report| {
            print!("{}", report.out);
            match report.errors.len() {
                0 => Ok(()),
                n => anyhow::bail!("{n} of the calls failed:\n{}", report.errors.join("\n")),
            }
        }),
        Command::Replica => roles::run_role(NodeRole::Replica),
        Command::Coordinator => roles::run_role(NodeRole::Coordinator),
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

    fn p(args: &[&str]) -> Result<Cli, clap::Error> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn the_summary_says_where_everything_is() {
        let t = Topology::local(3, 2, &mut (9000..));
        let s = summary(&Where {
            gateway: "http://127.0.0.1:9000",
            topology: &t,
            data_dir: std::path::Path::new("data"),
            manifest: std::path::Path::new("target/cluster/manifest.json"),
            nginx_log: std::path::Path::new("target/cluster/nginx/logs/error.log"),
            pid: 42,
            exe: "target/release/cluster",
            secret: std::path::Path::new("target/cluster/secret"),
        });
        assert_eq!(s.lines().next(), Some("gateway: http://127.0.0.1:9000"), "tools read the first line");
        let page = format!("http://{}/admin/status", t.nodes(model::topology::Service::Order).coordinators[0]);
        assert!(s.contains(&page), "the status page in:\n{s}");
        for want in [
            "data (a folder",
            "manifest.json",
            "error.log",
            "kill -TERM 42",
            "create_user",
            "target/release/cluster admin status",
            "target/cluster/secret",
        ] {
            assert!(s.contains(want), "{want} in:\n{s}");
        }
    }

    fn up_of(args: &[&str]) -> UpArgs {
        match p(args).unwrap().command {
            Command::Up(up) => up,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn up_defaults() {
        let d = up_of(&["up"]);
        assert_eq!(d, UpArgs::default());
        assert_eq!(d.topology, PathBuf::from("env/topology.toml"));
        assert_eq!(d.data_dir, PathBuf::from("data"), "outside target/, so cargo clean keeps it");
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
        assert_eq!(up_of(&spaced), want);
        let inline = [
            "up",
            "--topology=t.toml",
            "--gateway-port=8080",
            "--data-dir=/d",
            "--engine=memory",
            "--keep-dead",
            "--node-exe=/bin/node",
        ];
        assert_eq!(up_of(&inline), want);
    }

    #[test]
    fn node_roles() {
        assert_eq!(p(&["replica"]).unwrap().command, Command::Replica);
        assert_eq!(p(&["coordinator"]).unwrap().command, Command::Coordinator);
        assert!(p(&["replica", "--x"]).is_err());
    }

    #[test]
    fn admin_commands() {
        let admin = |args: &[&str]| match p(args).unwrap().command {
            Command::Admin(a) => (a.work_dir, a.action.action()),
            other => panic!("{other:?}"),
        };
        assert_eq!(admin(&["admin", "status"]), (PathBuf::from("target/cluster"), Action::Status));
        assert_eq!(admin(&["admin", "evict", "stock", "2"]).1, Action::Evict(Service::Stock, 2));
        assert_eq!(admin(&["admin", "anti-entropy"]).1, Action::AntiEntropy(None));
        assert_eq!(admin(&["admin", "anti-entropy", "order"]).1, Action::AntiEntropy(Some(Service::Order)));
        assert_eq!(admin(&["admin", "status", "--work-dir", "/w"]).0, PathBuf::from("/w"));
        assert_eq!(admin(&["admin", "--work-dir=/w", "status"]).0, PathBuf::from("/w"));
        for bad in [
            &["admin"][..],
            &["admin", "evict", "shop", "1"],
            &["admin", "evict", "order"],
            &["admin", "evict", "order", "-1"],
        ] {
            assert!(p(bad).is_err(), "{bad:?} was accepted");
        }
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
        for help in [&["--help"][..], &["up", "-h"], &["admin", "--help"]] {
            let e = p(help).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp, "{help:?}");
            assert!(!e.use_stderr(), "help goes to stdout");
        }
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
