//! A small TCP proxy between the workers and Redis that a test can cut (close
//! every connection) or black-hole (accept and keep connections, deliver
//! nothing): what a dropped network link or a dead load balancer looks like.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::Notify,
};

#[derive(Debug, Default)]
struct State {
    blackhole: AtomicBool,
    cut: Notify,
}

/// A running proxy to one Redis.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else { continue };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, shared.clone()));
                tokio::spawn(pump(sr, cw, shared.clone()));
            }
        });
        Proxy { addr, state }
    }

    /// `redis://127.0.0.1:PORT` of the proxy.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// While on, bytes are swallowed in both directions; connections stay open.
    pub fn blackhole(&self, on: bool) {
        self.state.blackhole.store(on, Ordering::SeqCst);
    }

    /// Closes every connection through the proxy.
    pub fn cut(&self) {
        self.state.cut.notify_waiters();
    }
}

async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, state: Arc<State>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let read = tokio::select! {
            r = from.read(&mut buf) => r,
            _ = state.cut.notified() => return,
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(n) if !state.blackhole.load(Ordering::SeqCst) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            Ok(_) => {} // black-holed: swallowed
        }
    }
}
