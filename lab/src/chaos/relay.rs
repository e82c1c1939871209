//! A node agent's way to the API server: a TCP relay from a port of its own on loopback to
//! kube-apiserver, which the fault injector cuts and restores. Cut, the relay drops every
//! connection it carries and closes each new one at once, as a node cut off from the
//! control plane sees it; its peers' relays are untouched.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::controlplane::AbortOnDrop;

pub struct Relay {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
    _accepting: AbortOnDrop,
}

impl Relay {
    /// Listens on a free port of 127.0.0.1 and relays each connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("a relay to the API server")?;
        let addr = listener.local_addr()?;
        let (cut, watching) = watch::channel(false);
        let accepting = AbortOnDrop(tokio::spawn(accept(listener, upstream, watching)));
        Ok(Self {
            addr,
            cut,
            _accepting: accepting,
        })
    }

    /// Where the agent connects.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every connection relayed now, and closes each new one until [`Self::restore`].
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

/// Accepts connections until aborted: each relayed while the relay is not cut.
async fn accept(listener: TcpListener, upstream: SocketAddr, cut: watch::Receiver<bool>) {
    // Owned here, the connections end with the relay: aborting this task drops the set,
    // which aborts them.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        while connections.try_join_next().is_some() {}
        if *cut.borrow() {
            drop(inbound);
            continue;
        }
        connections.spawn(relay(inbound, upstream, cut.clone()));
    }
}

/// Relays one connection until either side closes it or the relay is cut.
async fn relay(mut inbound: TcpStream, upstream: SocketAddr, mut cut: watch::Receiver<bool>) {
    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = cut.wait_for(|cut| *cut) => {}
    }
}
