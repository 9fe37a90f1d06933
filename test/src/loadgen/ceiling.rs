//! The gateway's ceiling: a separate nginx, configured like the cluster's gateway (one
//! process, one worker, the same accept queue and client keep-alive defaults, no access log)
//! but answering every request itself with `200 ok`, started on a free loopback port for
//! the length of a run. Loading it with the same users and scenarios as the cluster shows how
//! much of the machine the gateway alone could serve; the ratio of the two throughputs says
//! how far the services are from that bound.

use anyhow::{anyhow, Context};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long nginx may take to answer its first request: it starts in milliseconds; 10 s
/// allows for a machine busy with builds.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The config: what the gateway's template sets for one process and its clients, and one
/// location that answers directly.
pub fn config(port: u16) -> String {
    format!(
        "# The load generator's gateway ceiling: nginx answering directly, no upstream.\n\
         master_process off;\n\
         worker_processes 1;\n\
         worker_rlimit_nofile 16384;\n\
         pid logs/nginx.pid;\n\
         error_log logs/error.log warn;\n\
         events {{\n    worker_connections 8192;\n}}\n\
         http {{\n\
         \x20   access_log off;\n\
         \x20   server_tokens off;\n\
         \x20   default_type text/plain;\n\
         \x20   client_body_temp_path temp/client_body;\n\
         \x20   proxy_temp_path temp/proxy;\n\
         \x20   fastcgi_temp_path temp/fastcgi;\n\
         \x20   uwsgi_temp_path temp/uwsgi;\n\
         \x20   scgi_temp_path temp/scgi;\n\
         \x20   server {{\n\
         \x20       listen 127.0.0.1:{port} backlog=4096;\n\
         \x20       location / {{\n\
         \x20           return 200 \"ok\\n\";\n\
         \x20       }}\n\
         \x20   }}\n\
         }}\n"
    )
}

/// A running ceiling nginx; dropping it stops the process and removes its folder.
pub struct Ceiling {
    /// The nginx process (this one's child).
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its prefix folder (config, logs).
    _dir: tempfile::TempDir,
}

impl Ceiling {
    /// Starts nginx on a free port and waits until it answers.
    pub fn start() -> anyhow::Result<Ceiling> {
        let nginx = cluster::nginx::find()?;
        let dir = tempfile::tempdir().context("ceiling folder")?;
        for d in ["logs", "temp"] {
            std::fs::create_dir_all(dir.path().join(d))?;
        }
        let port = cluster::ports::free_ports(1)?[0];
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config(port))?;
        let mut prefix = dir.path().to_path_buf().into_os_string();
        prefix.push("/");
        let child = Command::new(nginx)
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the ceiling nginx")?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut c = Ceiling { child, addr, _dir: dir };
        c.wait_ready(READY_TIMEOUT)?;
        Ok(c)
    }

    /// The base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn wait_ready(&mut self, within: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                let log = std::fs::read_to_string(self._dir.path().join("logs/error.log")).unwrap_or_default();
                return Err(anyhow!("the ceiling nginx exited ({status}): {err}{log}"));
            }
            if answers(self.addr) {
                return Ok(());
            }
            if start.elapsed() > within {
                return Err(anyhow!("the ceiling nginx did not answer on {} within {within:?}", self.addr));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Whether `GET /` at `addr` answers 200.
fn answers(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET / HTTP/1.1\r\nHost: ceiling\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    buf.starts_with(b"HTTP/1.1 200")
}

impl Drop for Ceiling {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether nginx is there to start a ceiling with (for callers that want to skip it).
pub fn available() -> bool {
    cluster::nginx::find().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_answers_directly_on_the_port() {
        let c = config(12345);
        assert!(c.contains("listen 127.0.0.1:12345 backlog=4096;"));
        assert!(c.contains("return 200 \"ok\\n\";"));
        assert!(!c.contains("proxy_pass"));
    }

    #[test]
    fn starts_answers_and_stops() {
        if !available() {
            eprintln!("nginx not installed: skipped");
            return;
        }
        let c = Ceiling::start().unwrap();
        assert!(answers(c.addr));
        let addr = c.addr;
        drop(c);
        assert!(!answers(addr));
    }
}
