//! A TCP proxy between workers and a server (the S3 server): it counts the bytes the server
//! sends, and can stall: connections made while stalled are accepted and read, but never
//! forwarded or answered, as a hung server would do. Threads end when the proxy drops.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

pub struct Proxy {
    pub port: u16,
    state: Arc<State>,
}

#[derive(Default)]
struct State {
    stalled: AtomicBool,
    from_server: AtomicU64,
    closed: AtomicBool,
}

impl Proxy {
    /// Forwards 127.0.0.1:<port> to `target` (host:port).
    pub fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let state = Arc::new(State::default());
        let accepting = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if accepting.closed.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let state = accepting.clone();
                let target = target.clone();
                std::thread::spawn(move || serve(client, &target, &state));
            }
        });
        Self { port, state }
    }

    /// Every request from now on hangs, on new and open connections alike, as with a server
    /// that stops answering; `false` forwards again.
    pub fn stall(&self, stalled: bool) {
        self.state.stalled.store(stalled, Ordering::SeqCst);
    }

    /// Bytes the server has sent through the proxy so far.
    pub fn bytes_from_server(&self) -> u64 {
        self.state.from_server.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.closed.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees `closed`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(mut client: TcpStream, target: &str, state: &Arc<State>) {
    if state.stalled.load(Ordering::SeqCst) {
        // Read what the client sends, answer nothing, until it gives up or the proxy goes.
        let _ = client.set_read_timeout(Some(Duration::from_millis(200)));
        let mut sink = [0u8; 4096];
        while !state.closed.load(Ordering::SeqCst) {
            match client.read(&mut sink) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return,
            }
        }
        return;
    }
    let Ok(server) = TcpStream::connect(target) else {
        return;
    };
    let (Ok(client_read), Ok(server_write)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let requests = state.clone();
    let upstream = std::thread::spawn(move || {
        copy(client_read, server_write, |n| {
            // Requests on a connection opened before the stall are swallowed too.
            !requests.stalled.load(Ordering::SeqCst) || n == 0
        })
    });
    copy(server, client, |n| {
        state.from_server.fetch_add(n as u64, Ordering::SeqCst);
        true
    });
    let _ = upstream.join();
}

/// Copies until either side closes; `forward(n)` sees each chunk's size and says whether
/// to pass it on (false: drop it).
fn copy(mut from: TcpStream, mut to: TcpStream, forward: impl Fn(usize) -> bool) {
    let mut buf = [0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if !forward(n) {
                    continue;
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
