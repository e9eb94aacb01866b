//! `durable serve`'s dashboard over the wire: where it is served (and that
//! `--no-dashboard` serves none), its token, and the addresses refused
//! with what to do.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use support::{run_raw, start_serve, stop_serve, LIMIT};

/// One HTTP/1.1 request (the connection closed after it); the status code
/// and the body.
fn http(addr: &str, path: &str, headers: &[&str]) -> (u16, String) {
    let mut stream =
        TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn dashboard_addr(line: &str) -> String {
    line.strip_prefix("durable serve: dashboard on http://")
        .and_then(|rest| rest.strip_suffix('/'))
        .unwrap_or_else(|| panic!("unexpected line: {line}"))
        .to_string()
}

#[test]
fn the_dashboard_is_served_with_the_token_and_not_with_no_dashboard() {
    let (server, _, lines) = start_serve(&[
        "--store",
        "memory",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--token",
        "s3cret",
    ]);
    let addr = dashboard_addr(&lines.recv_timeout(LIMIT).expect("the dashboard's line"));
    let (status, page) = http(&addr, "/", &[]);
    assert_eq!(status, 200);
    assert!(page.contains("durable dashboard"), "{page}");
    let (status, body) = http(&addr, "/api/instances", &[]);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("bearer token"), "{body}");
    let (status, body) = http(&addr, "/api/instances", &["Authorization: Bearer s3cret"]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"instances\":[]"), "{body}");
    stop_serve(server, lines);

    let (mut server, _, lines) = start_serve(&[
        "--store",
        "memory",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--no-dashboard",
    ]);
    let pid = server.child().id();
    let sent = std::process::Command::new("sh")
        .args(["-c", &format!("kill -TERM {pid}")])
        .status()
        .expect("running sh -c kill");
    assert!(sent.success());
    let mut printed = Vec::new();
    loop {
        let line = lines
            .recv_timeout(LIMIT)
            .unwrap_or_else(|_| panic!("no \"stopped\" within {LIMIT:?} of SIGTERM: {printed:?}"));
        if line == "durable serve: stopped" {
            break;
        }
        printed.push(line);
    }
    assert!(
        printed.iter().all(|l| !l.contains("dashboard")),
        "--no-dashboard printed {printed:?}"
    );
    let status = server.child().wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn dashboard_addresses_in_use_or_beyond_loopback_are_refused_with_what_to_do() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let run = run_raw(&[
        "--store",
        "memory",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--dashboard",
        &addr,
    ])
    .code(3);
    assert!(
        run.stderr.contains(&addr) && run.stderr.contains("--no-dashboard"),
        "{}",
        run.stderr
    );
    let open = run_raw(&[
        "--store",
        "memory",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--dashboard",
        "0.0.0.0:0",
    ])
    .code(1);
    assert!(
        open.stderr.contains("--dashboard 0.0.0.0:0") && open.stderr.contains("--token"),
        "{}",
        open.stderr
    );
    let bad = run_raw(&[
        "--store",
        "memory",
        "serve",
        "--dashboard",
        "localhost:8082",
    ])
    .code(1);
    assert!(
        bad.stderr.contains("--dashboard localhost:8082"),
        "{}",
        bad.stderr
    );
}
