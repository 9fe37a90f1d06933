//! `cluster-echo-node`: a stand-in for a replica or coordinator in the launcher's own tests.
//!
//! It is started exactly like a real node (`<exe> replica|coordinator`, configured by the
//! same `APP__*` variables, loaded and bound by `cluster::roles`), answers `GET /health` with
//! 200 `ok`, and answers every other request with a line describing the process and what it
//! received (`role=coordinator service=order id=1 method=POST path=/orders/x request_id=...
//! secret=absent`). The launcher (readiness, restarts, manifest, signals) and the gateway
//! config are so tested without the services. It is not part of any deployment.

use cluster::roles::{role_from_args, Loaded};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;

fn main() -> ExitCode {
    let run = || -> anyhow::Result<()> {
        let loaded = Loaded::load(role_from_args(std::env::args())?)?;
        let listener = loaded.bind()?;
        let who = match &loaded {
            Loaded::Replica(s, _) => format!("role=replica service={} id={}", s.service, s.id),
            Loaded::Coordinator(s, _) => format!("role=coordinator service={} id={}", s.service, s.id),
        };
        for stream in listener.incoming() {
            let who = who.clone();
            std::thread::spawn(move || {
                if let Ok(s) = stream {
                    let _ = serve(s, &who);
                }
            });
        }
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Answers one request, then closes the connection.
fn serve(stream: TcpStream, who: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
    let (mut request_id, mut secret, mut length) = ("none".to_string(), "absent", 0usize);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        let Some((k, v)) = h.split_once(':') else { continue };
        match k.trim().to_ascii_lowercase().as_str() {
            "x-request-id" => request_id = v.trim().to_string(),
            "x-webshop-secret" => secret = "present",
            "content-length" => length = v.trim().parse().unwrap_or(0),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let text = if method == "GET" && path == "/health" {
        "ok".to_string()
    } else {
        format!("{who} method={method} path={path} request_id={request_id} secret={secret}")
    };
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )?;
    out.flush()
}
