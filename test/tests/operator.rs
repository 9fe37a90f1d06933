//! What a newcomer and an operator do first, run against a whole test cluster: the README's
//! quick start, command by command with its printed answers, and `cluster admin`.

mod support;

use cluster::admin::{self, Action};
use model::topology::Service;
use support::start;

/// The README's quick-start block: the ```console block after the marker comment.
fn quick_start_block() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let marker = readme.find("<!-- The block below is run by a test").expect("the quick-start marker in README.md");
    let rest = &readme[marker..];
    let open = rest.find("```console\n").expect("a console block after the marker") + "```console\n".len();
    let close = rest[open..].find("```").expect("the block's end") + open;
    rest[open..close].to_string()
}

/// A console block's commands (`$ ` lines) with the lines printed after each.
fn commands(block: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in block.lines() {
        match line.strip_prefix("$ ") {
            Some(cmd) => out.push((cmd.to_string(), String::new())),
            None => {
                let (_, printed) = out.last_mut().expect("the block starts with a command");
                printed.push_str(line);
                printed.push('\n');
            }
        }
    }
    out
}

/// `text` with every id (a run of 32 or more hex digits and dashes) replaced by `<id>`: ids
/// are new on every run.
fn without_ids(text: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 32 && run.chars().any(|c| c.is_ascii_hexdigit()) {
            out.push_str("<id>");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() || ('a'..='f').contains(&c) || c == '-' {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out.trim().to_string()
}

#[test]
fn ids_are_recognised_and_nothing_else_is() {
    assert_eq!(without_ids("{\"user_id\":\"1d2f0bc3e6b0483d93c0e7a6a5fbd6a2\"}"), "{\"user_id\":\"<id>\"}");
    assert_eq!(without_ids("3f2504e0-4f89-11d3-9a0c-0305e82c3301 (400)"), "<id> (400)");
    assert_eq!(without_ids("{\"stock\":3,\"price\":30}\n"), "{\"stock\":3,\"price\":30}");
    assert_eq!(without_ids("Checkout successful"), "Checkout successful");
    let parsed = commands("$ a=1\n$ echo $a\n1\n2\n");
    assert_eq!(parsed, vec![("a=1".into(), "".into()), ("echo $a".into(), "1\n2\n".into())]);
}

/// Runs the README's quick start in one bash session against a test cluster's gateway and
/// compares every command's output with what the README shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_quick_start_prints_what_the_readme_shows() {
    let c = start(3).await;
    let steps = commands(&quick_start_block());
    assert!(steps.len() >= 10, "the quick start lost its steps: {steps:?}");
    const END: &str = "@@@ end of step @@@";
    let mut script = String::from("set -u\n");
    for (cmd, _) in &steps {
        script.push_str(&cmd.replace("http://127.0.0.1:8000", &c.gateway_url()));
        script.push_str(&format!("\nprintf '\\n{END}\\n'\n"));
    }
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash").arg("-c").arg(script).output().expect("bash runs")
    })
    .await
    .unwrap();
    assert!(out.status.success(), "bash: {}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).unwrap();
    let printed: Vec<&str> = printed.split(&format!("\n{END}\n")).collect();
    assert_eq!(printed.len(), steps.len() + 1, "one output per step: {printed:?}");
    for ((cmd, want), got) in steps.iter().zip(&printed) {
        assert_eq!(without_ids(got), without_ids(want), "README quick start: `{cmd}` printed {got:?}");
    }
}

/// `cluster admin status`, `evict` and `anti-entropy`, as `cluster::admin::run` (the command
/// line's parsing is unit-tested in the cluster crate), against the folder of a running
/// cluster: it finds the topology and the secret there by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_admin_shows_status_evicts_and_runs_anti_entropy() {
    let c = start(3).await;
    let dir = c.work_dir();
    let run = |action: Action| {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || admin::run(&dir, &action))
    };

    let done = |r: admin::Report| {
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        r.out
    };
    let status = done(run(Action::Status).await.unwrap().unwrap());
    for svc in Service::ALL {
        assert!(status.contains(&format!("{svc}: view epoch")), "{svc} in:\n{status}");
    }
    // One line per replica: id, address, state.
    let up = status.lines().filter(|l| l.split_whitespace().nth(2) == Some("up")).count();
    assert_eq!(up, 9, "nine replicas up in:\n{status}");

    let evicted = done(run(Action::Evict(Service::Stock, 2)).await.unwrap().unwrap());
    assert!(evicted.starts_with("stock: view "), "{evicted}");
    assert!(evicted.contains("members 0, 1;"), "replica 2 left the view: {evicted}");
    // It still answers, so the prober brings it back as every evicted replica.
    c.wait_all_members(Service::Stock, std::time::Duration::from_secs(60)).await;

    let rounds = done(run(Action::AntiEntropy(None)).await.unwrap().unwrap());
    assert_eq!(rounds.lines().count(), 3, "one round per service: {rounds}");
    for (line, svc) in rounds.lines().zip(Service::ALL) {
        assert!(line.starts_with(&format!("{svc}: ")) && line.contains("round in"), "{line}");
    }

    let err = format!("{:#}", run(Action::Evict(Service::Stock, 9)).await.unwrap().unwrap_err());
    assert!(err.contains("stock has replicas 0 to 2"), "{err}");

    // Without the secret file, changes are not possible, and the error says why.
    std::fs::remove_file(dir.join(cluster::launcher::SECRET_FILE)).unwrap();
    let err = format!("{:#}", run(Action::Evict(Service::Stock, 1)).await.unwrap().unwrap_err());
    assert!(err.contains("is a cluster running"), "{err}");
}

/// The launcher writes the cluster secret for `cluster admin` readable by its user only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_file_is_readable_by_its_user_only() {
    use std::os::unix::fs::PermissionsExt;
    let c = start(1).await;
    let path = c.work_dir().join(cluster::launcher::SECRET_FILE);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", path.display());
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), c.secret());
}
