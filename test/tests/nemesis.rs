//! The nemesis in CI: a 60-second run with a fixed seed against a test cluster (three
//! replicas and two coordinators per service, dead processes restarted by the launcher):
//! kills, pauses and cuts at random, every operation recorded, and every checker must hold.
//! The checkers' own tests (`webshop_tests::nemesis::check`) show each of them failing on a
//! hand-made history.

mod support;

use std::time::Duration;
use support::start_with;
use webshop_tests::nemesis::{self, report};

#[test]
fn a_sixty_second_nemesis_run_with_a_fixed_seed_finds_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let c = rt.block_on(start_with(3, "log", false));
    let mut opts = nemesis::Options::new(
        &c.gateway_url(),
        nemesis::deployment::Deployment::Processes { manifest: c.manifest_path() },
        Some(c.secret().to_string()),
    );
    opts.seed = 20261202;
    opts.run_time = Duration::from_secs(60);
    let out = std::env::var_os("NEMESIS_OUT").map(std::path::PathBuf::from);
    let o = std::thread::scope(|s| s.spawn(|| nemesis::run(&opts)).join().unwrap()).expect("the run was made");
    if let Some(dir) = out {
        report::write(&dir, &o).unwrap();
    }
    let summary = report::summary(&o);
    println!("{summary}");
    assert!(o.history.faults.len() >= 5, "faults were injected: {summary}");
    assert!(o.history.ops.len() >= 500, "operations were made: {summary}");
    assert!(o.valid, "{summary}");
    drop(c);
}
