//! A smoke run of the load generator against a real small cluster: a few seconds, bounded in
//! time and in requests, asserting only correctness (no failed request, checkouts that pay,
//! the JSON and the chart written), never speed: this is a test, not a benchmark.

mod support;

use serde_json::Value;
use std::time::Duration;

/// Bound on the whole loadgen process: its run (3 s), the ceiling's (1 s) and a small
/// batch_init take seconds; a debug build on a busy machine may take many times that.
const LOADGEN_BOUND: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_smoke_run() {
    let c = support::start(1).await;
    let out = tempfile::tempdir().unwrap();
    let json = out.path().join("report.json");
    let png = out.path().join("chart.png");
    let manifest = c.manifest_path();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_loadgen"));
    cmd.args(["--host", &c.gateway_url(), "--init", "--quiet"])
        .args(["--batch-users", "200", "--batch-items", "50", "--batch-orders", "300"])
        .args(["-u", "4", "-r", "20", "-t", "3s", "--max-requests", "3000", "--timeout", "30"])
        .args(["-s", "checkout:2", "-s", "find_stock:1", "-s", "mixed:1"])
        .args(["--ceiling", "--ceiling-time", "1s"])
        .arg("--manifest")
        .arg(&manifest)
        .arg("--json")
        .arg(&json)
        .arg("--chart")
        .arg(&png)
        .kill_on_drop(true);
    let output = tokio::time::timeout(LOADGEN_BOUND, cmd.output())
        .await
        .expect("loadgen ended within its bound")
        .expect("loadgen ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "loadgen failed ({}):\n{stdout}\n{stderr}", output.status);

    let r: Value = serde_json::from_slice(&std::fs::read(&json).expect("JSON written")).expect("JSON");
    assert_eq!(r["schema"], 1);
    assert_eq!(r["init"].as_array().map(Vec::len), Some(3), "{}", r["init"]);
    let run = &r["run"];
    let requests = run["requests"].as_u64().unwrap();
    assert!(requests > 0 && requests <= 3000, "bounded run: {requests}");
    assert_eq!(run["errors"], 0, "{stdout}");
    let checkout = run["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "POST /orders/checkout/[order_id]")
        .expect("checkouts ran");
    let counts = &checkout["checkouts"];
    assert!(counts["first_time"].as_u64().unwrap() > 0, "{counts}");
    assert_eq!((counts["rejected"].as_u64(), counts["other"].as_u64()), (Some(0), Some(0)), "{counts}");
    assert!(run["cluster"]["processes"].as_array().is_some_and(|p| !p.is_empty()), "cluster usage measured");
    assert_eq!(r["ceiling"]["errors"], 0);
    assert!(r["ceiling_ratio"].as_f64().is_some());
    assert!(stdout.contains("throughput / gateway ceiling"), "{stdout}");

    let png = std::fs::read(&png).expect("chart written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "a PNG picture");
}
