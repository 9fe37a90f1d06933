//! `build_compose`: writes docker-compose.yml (and, in `deploy/compose/` beside it, the local
//! compose file, the configs both mount and its Prometheus scrape config), the local
//! processes' Prometheus scrape config and the Kubernetes manifests in k8s/ from the topology
//! (see `--help`; arguments parsed by clap).

use anyhow::{bail, Context};
use build_compose::{compose_files, k8s_files, local_prometheus_file};
use clap::Parser;
use model::topology::Topology;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "build_compose",
    about = "Generates the container deployments of the topology (run from the repository root).",
    after_help = "\
Files written:
  PATH                                          the docker compose file
  <folder of PATH>/deploy/compose/docker-compose.local.yml
                                                the same on images built here (scripts/images.sh)
  <folder of PATH>/deploy/compose/{topology.toml,nginx.conf}
                                                the configs both mount
  <folder of PATH>/deploy/compose/prometheus.yml
                                                its Prometheus scrape config
  <folder of PATH>/deploy/prometheus/prometheus.local.yml
                                                the scrape config of `cluster up`
  DIR/*.yaml                                    the Kubernetes manifests"
)]
struct Args {
    /// Topology to deploy.
    #[arg(long, value_name = "FILE", default_value = "env/topology.toml")]
    topology: PathBuf,
    /// Where to write the compose file.
    #[arg(long = "out", value_name = "PATH", default_value = "docker-compose.yml")]
    out: PathBuf,
    /// Where to write the Kubernetes manifests.
    #[arg(long, value_name = "DIR", default_value = "k8s")]
    k8s: PathBuf,
    /// Write nothing; fail if any file differs from what would be written.
    #[arg(long)]
    check: bool,
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
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("build_compose: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed_and_parses() {
        use clap::CommandFactory;
        Args::command().debug_assert();
        let a = Args::try_parse_from(["build_compose"]).unwrap();
        assert_eq!(
            (a.topology, a.out, a.k8s, a.check),
            ("env/topology.toml".into(), "docker-compose.yml".into(), "k8s".into(), false)
        );
        let a =
            Args::try_parse_from(["build_compose", "--topology=t.toml", "--out", "o/c.yml", "--k8s", "k", "--check"])
                .unwrap();
        assert_eq!((a.topology, a.out, a.k8s, a.check), ("t.toml".into(), "o/c.yml".into(), "k".into(), true));
        assert!(Args::try_parse_from(["build_compose", "--check=yes"]).is_err());
        assert!(Args::try_parse_from(["build_compose", "extra"]).is_err());
    }
}
