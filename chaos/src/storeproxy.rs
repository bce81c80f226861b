//! A TCP proxy between the workers and the S3 server, which the harness switches between
//! passing traffic and three object-store faults: the store **down** (every connection, open
//! or new, is dropped), **slow** (each new connection waits before it is forwarded) and
//! **failing** (every request is answered `503 SlowDown`, S3's throttling reply). The oracle
//! talks to the server directly, so only the workers see the faults.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreFault {
    /// Connections dropped.
    Down,
    /// Each new connection delayed by this many ms.
    Slow(u16),
    /// Every request answered 503.
    Failing,
}

/// The proxy's state: a mode word and a generation that changes with every switch, so
/// connections opened under an earlier mode notice and close.
struct Shared {
    /// 0 pass, 1 down, 2 failing, 3 slow (low 16 bits of `slow_ms`).
    mode: AtomicU64,
    generation: AtomicU64,
    /// Connections a fault dropped, failed or delayed.
    faulted: AtomicU64,
}

/// A running proxy (its threads live as long as the process).
pub struct StoreProxy {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    shared: Arc<Shared>,
}

const PASS: u64 = 0;
const DOWN: u64 = 1;
const FAILING: u64 = 2;
const SLOW: u64 = 3;

impl StoreProxy {
    /// Starts a proxy to `upstream` (`http://host:port`) on a free loopback port.
    pub fn start(upstream: &str) -> anyhow::Result<StoreProxy> {
        let target = upstream
            .strip_prefix("http://")
            .context("the S3 endpoint is http://")?
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            mode: AtomicU64::new(PASS),
            generation: AtomicU64::new(0),
            faulted: AtomicU64::new(0),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (s, target) = (s.clone(), target.clone());
                std::thread::spawn(move || serve(conn, &target, &s));
            }
        });
        Ok(StoreProxy { endpoint, shared })
    }

    /// Connections a fault has dropped, failed or delayed so far.
    pub fn faulted(&self) -> u64 {
        self.shared.faulted.load(Ordering::SeqCst)
    }

    /// Switches to `fault`, or back to passing traffic with `None`.
    pub fn set(&self, fault: Option<StoreFault>) {
        let mode = match fault {
            None => PASS,
            Some(StoreFault::Down) => DOWN,
            Some(StoreFault::Failing) => FAILING,
            Some(StoreFault::Slow(ms)) => SLOW | ((ms as u64) << 8),
        };
        self.shared.mode.store(mode, Ordering::SeqCst);
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
    }
}

fn serve(client: TcpStream, target: &str, s: &Shared) {
    let generation = s.generation.load(Ordering::SeqCst);
    let mode = s.mode.load(Ordering::SeqCst);
    if mode != PASS {
        s.faulted.fetch_add(1, Ordering::SeqCst);
    }
    match mode & 0xff {
        DOWN => {
            let _ = client.shutdown(Shutdown::Both);
        }
        FAILING => answer_503(client),
        _ => {
            if mode & 0xff == SLOW {
                std::thread::sleep(Duration::from_millis(mode >> 8));
            }
            let Ok(upstream) = TcpStream::connect(target) else {
                let _ = client.shutdown(Shutdown::Both);
                return;
            };
            forward(client, upstream, s, generation);
        }
    }
}

/// Reads the request head and answers S3's throttling error.
fn answer_503(mut client: TcpStream) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 1 << 20 {
        match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
    let _ = write!(
        client,
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.shutdown(Shutdown::Both);
}

/// Copies both ways until either side closes or the proxy's mode changes away from passing.
fn forward(client: TcpStream, upstream: TcpStream, s: &Shared, generation: u64) {
    let pairs = [
        (client.try_clone(), upstream.try_clone()),
        (upstream.try_clone(), client.try_clone()),
    ];
    std::thread::scope(|scope| {
        for (from, to) in pairs {
            let (Ok(mut from), Ok(mut to)) = (from, to) else {
                continue;
            };
            scope.spawn(move || {
                let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
                let mut buf = [0u8; 64 << 10];
                loop {
                    let changed = s.generation.load(Ordering::SeqCst) != generation
                        && s.mode.load(Ordering::SeqCst) & 0xff == DOWN;
                    if changed {
                        break;
                    }
                    match from.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(_) => break,
                    }
                }
                let _ = from.shutdown(Shutdown::Both);
                let _ = to.shutdown(Shutdown::Both);
            });
        }
    });
}
