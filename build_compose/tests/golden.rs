//! The committed deployments (docker-compose.yml, deploy/compose/, the local Prometheus config
//! in deploy/prometheus/, k8s/) are exactly what the generator makes of env/topology.toml:
//! change the topology or the generator, then run `cargo run --release -p build_compose` and
//! commit the result.

use build_compose::{compose_files, k8s_files, local_prometheus_file};
use model::topology::Topology;
use std::path::Path;

#[test]
fn committed_deployments_match_the_generator() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let t = Topology::load(&root.join("env/topology.toml")).unwrap();
    let mut files = compose_files(&t, "docker-compose.yml", ".").unwrap();
    files.extend(k8s_files(&t).unwrap());
    files.push(local_prometheus_file(&t).unwrap());
    let mut stale = Vec::new();
    for (path, text) in &files {
        if std::fs::read_to_string(root.join(path)).ok().as_deref() != Some(text.as_str()) {
            stale.push(path.display().to_string());
        }
    }
    assert!(stale.is_empty(), "out of date, run `cargo run --release -p build_compose` and commit: {stale:?}");
    // Nothing generated earlier is left in k8s/ (kubectl apply -f k8s/ would apply it) or
    // in deploy/prometheus/.
    for dir in ["k8s", "deploy/prometheus"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let name = Path::new(dir).join(entry.unwrap().file_name());
            assert!(files.iter().any(|(p, _)| *p == name), "{} is not generated: remove it", name.display());
        }
    }
}
