//! `nemesis`: randomized faults against a running cluster with history checking (see
//! `webshop_tests::nemesis` and docs/reliability.md). Prints the summary (last line
//! `valid=true|false violations=N`); exits 0 only when every checker holds, 1 when one does
//! not, 2 when the run could not be made.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use webshop_tests::loadgen::cli::parse_duration;
use webshop_tests::nemesis::{self, deployment::Deployment, faults::Mix, report};

/// Randomized faults against a running cluster, with every operation recorded and checked.
#[derive(Parser, Debug)]
#[command(name = "nemesis")]
struct Args {
    /// The gateway.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    host: String,
    /// The launcher's manifest (the processes faults hit).
    #[arg(long, default_value = "target/cluster/manifest.json")]
    manifest: PathBuf,
    /// Hit the containers of this docker compose project instead (`scripts/compose.sh up`
    /// makes project `webshop`): `docker kill` and `start`, `pause` and `unpause`, and cuts
    /// as `docker network disconnect` of a replica (no secret needed).
    #[arg(long, value_name = "PROJECT")]
    compose: Option<String>,
    /// The topology the containers read, for their ports (with `--compose`).
    #[arg(long, default_value = "deploy/compose/topology.toml")]
    compose_topology: PathBuf,
    /// Seeds the fault schedule and the operation mix: the same seed replays both.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How long operations and faults run before the heal phase.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    run_time: Duration,
    /// Client workers.
    #[arg(long, default_value_t = 8)]
    clients: u32,
    /// Operations at most.
    #[arg(long, default_value_t = 1_000_000)]
    max_ops: usize,
    /// Mean time between faults (0: none).
    #[arg(long, default_value = "4s", value_parser = parse_duration)]
    fault_interval: Duration,
    /// The fault kinds, optionally weighted: `kill,pause,cut` or `kill=1,pause=3`. Cuts of
    /// local processes need the cluster secret (WEBSHOP_SECRET) and a build with the fault
    /// hooks.
    #[arg(long, default_value = "kill,pause,cut")]
    faults: String,
    /// Faults that may hit one service at a time (more than one may take a majority down).
    #[arg(long, default_value_t = 1)]
    max_down: usize,
    /// Longest wait for every service to converge after the run.
    #[arg(long, default_value = "90s", value_parser = parse_duration)]
    heal_timeout: Duration,
    /// Where to write nemesis.json and nemesis.png.
    #[arg(long, default_value = "target/nemesis")]
    out: PathBuf,
}

fn main() -> ExitCode {
    net::logging::init("nemesis");
    let args = Args::parse();
    let mix = match Mix::parse(&args.faults) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("nemesis: --faults: {e}");
            return ExitCode::from(2);
        }
    };
    let secret = std::env::var("WEBSHOP_SECRET").ok().filter(|s| !s.is_empty());
    let deployment = match args.compose {
        None => Deployment::Processes { manifest: args.manifest },
        Some(project) => match model::topology::Topology::load(&args.compose_topology) {
            Ok(topology) => Deployment::Containers { project, topology },
            Err(e) => {
                eprintln!("nemesis: --compose-topology {}: {e}", args.compose_topology.display());
                return ExitCode::from(2);
            }
        },
    };
    let mut opts = nemesis::Options::new(&args.host, deployment, secret);
    opts.seed = args.seed;
    opts.run_time = args.run_time;
    opts.clients = args.clients;
    opts.max_ops = args.max_ops;
    opts.fault_interval = args.fault_interval;
    opts.mix = mix;
    opts.max_down = args.max_down;
    opts.heal_timeout = args.heal_timeout;
    opts.out = Some(args.out.clone());
    match nemesis::run(&opts) {
        Ok(o) => {
            if let Err(e) = report::write(&args.out, &o) {
                eprintln!("nemesis: writing the report: {e:#}");
            }
            print!("{}", report::summary(&o));
            if o.valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("nemesis: {e:#}");
            ExitCode::from(2)
        }
    }
}
