//! `build_compose`: writes docker-compose.yml (and, in `deploy/compose/` beside it, the local
//! compose file, the configs both mount and its Prometheus scrape config), the local
//! processes' Prometheus scrape config and the Kubernetes manifests in k8s/ from the topology
//! (see `--help`).

use anyhow::{bail, Context};
use build_compose::{compose_files, k8s_files, local_prometheus_file};
use common::topology::Topology;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "\
usage: build_compose [--topology FILE] [--out PATH] [--k8s DIR] [--check]

Generates the container deployments of the topology (run from the repository root):
  PATH                          the docker compose file (default: docker-compose.yml)
  <folder of PATH>/deploy/compose/docker-compose.local.yml     the same on images built here
                                (scripts/images.sh, scripts/compose.sh)
  <folder of PATH>/deploy/compose/{topology.toml,nginx.conf}   the configs both mount
  <folder of PATH>/deploy/compose/prometheus.yml              its Prometheus scrape config
  <folder of PATH>/deploy/prometheus/prometheus.local.yml     the scrape config of `cluster up`
  DIR/*.yaml                    the Kubernetes manifests (default: k8s)

options:
  --topology FILE   topology to deploy (default: env/topology.toml)
  --out PATH        where to write the compose file
  --k8s DIR         where to write the Kubernetes manifests
  --check           write nothing; fail if any file differs from what would be written
";

struct Args {
    topology: PathBuf,
    out: PathBuf,
    k8s: PathBuf,
    check: bool,
}

fn parse(args: &[String]) -> Result<Option<Args>, String> {
    let mut a = Args {
        topology: "env/topology.toml".into(),
        out: "docker-compose.yml".into(),
        k8s: "k8s".into(),
        check: false,
    };
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (arg.as_str(), None),
        };
        let mut value = || inline.clone().or_else(|| rest.next().cloned()).ok_or(format!("{name} needs a value"));
        match name {
            "--topology" => a.topology = value()?.into(),
            "--out" => a.out = value()?.into(),
            "--k8s" => a.k8s = value()?.into(),
            "--check" if inline.is_none() => a.check = true,
            "-h" | "--help" => return Ok(None),
            _ => return Err(format!("unknown argument '{arg}'")),
        }
    }
    Ok(Some(a))
}

fn run(a: Args) -> anyhow::Result<()> {
    let t = Topology::load(&a.topology).with_context(|| "run from the repository root or pass --topology")?;
    let out_dir = a.out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = a.out.file_name().context("--out needs a file name")?.to_string_lossy().to_string();
    // The image is built from the repository root (the current folder): `.` for a compose
    // file written there, its absolute path for one written elsewhere.
    let context = if out_dir == Path::new(".") {
        ".".to_string()
    } else {
        std::env::current_dir().context("finding the current folder")?.display().to_string()
    };
    let mut files: Vec<(PathBuf, String)> =
        compose_files(&t, &name, &context)?.into_iter().map(|(p, text)| (out_dir.join(p), text)).collect();
    let (path, text) = local_prometheus_file(&t)?;
    files.push((out_dir.join(path), text));
    files.extend(k8s_files(&t)?.into_iter().map(|(p, text)| (a.k8s.join(p.strip_prefix("k8s").unwrap_or(&p)), text)));
    let mut stale = Vec::new();
    for (path, text) in &files {
        if a.check {
            if std::fs::read_to_string(path).ok().as_deref() != Some(text.as_str()) {
                stale.push(path.display().to_string());
            }
            continue;
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if !stale.is_empty() {
        bail!("out of date (run cargo run --release -p build_compose): {}", stale.join(", "));
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse(&args) {
        Ok(None) => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Some(a)) => match run(a) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("build_compose: {e:#}");
                ExitCode::FAILURE
            }
        },
        Err(msg) => {
            eprint!("build_compose: {msg}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
