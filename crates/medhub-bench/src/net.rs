//! Client sockets: spread over several loopback source addresses, so that 15,000 connections
//! (and the TIME_WAIT sockets of earlier runs) never exhaust one address's ephemeral ports.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub type Ws = WebSocketStream<TcpStream>;

/// Client read buffer: benchmark frames are small, and 15,000 clients with tungstenite's
/// default 128 KiB would reserve 1.9 GiB in the load generator.
const CLIENT_READ_BUFFER: usize = 8 * 1024;
/// Largest frame a client accepts (resume replays pages of events in separate frames).
const CLIENT_MAX_FRAME: usize = 4 * 1024 * 1024;

/// Parses `127.0.0.2-127.0.0.9` (a range of IPv4 addresses) or a comma-separated list.
pub fn parse_sources(spec: &str) -> Result<Vec<IpAddr>> {
    if let Some((a, b)) = spec.split_once('-') {
        let a: Ipv4Addr = a.trim().parse().with_context(|| format!("bad address {a}"))?;
        let b: Ipv4Addr = b.trim().parse().with_context(|| format!("bad address {b}"))?;
        let (a, b) = (u32::from(a), u32::from(b));
        if b < a || b - a > 255 {
            bail!("bad source address range {spec}");
        }
        return Ok((a..=b).map(|v| IpAddr::V4(Ipv4Addr::from(v))).collect());
    }
    spec.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse::<IpAddr>().with_context(|| format!("bad address {s}")))
        .collect()
}

/// Opens client connections to one server from a set of source addresses.
#[derive(Clone, Debug)]
pub struct Dialer {
    pub server: SocketAddr,
    pub sources: Vec<IpAddr>,
    pub timeout: Duration,
}

impl Dialer {
    /// A TCP connection for client `i` (source address `i mod sources`), with TCP_NODELAY.
    pub async fn tcp(&self, i: usize) -> Result<TcpStream> {
        let socket = TcpSocket::new_v4().context("socket")?;
        if !self.sources.is_empty() {
            let src = self.sources[i % self.sources.len()];
            socket.bind(SocketAddr::new(src, 0)).with_context(|| format!("bind {src}"))?;
        }
        let stream = socket.connect(self.server).await.map_err(|e| anyhow!("connect: {}", short_io(&e)))?;
        stream.set_nodelay(true).context("nodelay")?;
        Ok(stream)
    }

    /// A WebSocket on `path` for client `i`.
    pub async fn ws(&self, i: usize, path: &str) -> Result<Ws> {
        let tcp = self.tcp(i).await?;
        let url = format!("ws://{}{}", self.server, path);
        let config = WebSocketConfig::default()
            .read_buffer_size(CLIENT_READ_BUFFER)
            .max_message_size(Some(CLIENT_MAX_FRAME))
            .max_frame_size(Some(CLIENT_MAX_FRAME));
        let (ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(config))
            .await
            .map_err(|e| anyhow!("handshake: {}", short_ws(&e)))?;
        Ok(ws)
    }
}

/// A short, stable name for an I/O error, to count failures by kind.
pub fn short_io(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "refused".into(),
        K::ConnectionReset => "reset".into(),
        K::TimedOut => "timed out".into(),
        K::AddrInUse => "address in use".into(),
        K::AddrNotAvailable => "address not available".into(),
        _ => e.to_string(),
    }
}

fn short_ws(e: &tokio_tungstenite::tungstenite::Error) -> String {
    use tokio_tungstenite::tungstenite::Error as E;
    match e {
        E::Io(io) => short_io(io),
        E::Http(resp) => format!("http {}", resp.status().as_u16()),
        other => other.to_string(),
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; the server binds it right after).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("find a free port")?;
    Ok(l.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ranges_and_lists_parse() {
        let r = parse_sources("127.0.0.2-127.0.0.9").unwrap();
        assert_eq!(r.len(), 8);
        assert_eq!(r[7], "127.0.0.9".parse::<IpAddr>().unwrap());
        assert_eq!(parse_sources("127.0.0.1, 127.0.0.3").unwrap().len(), 2);
        assert!(parse_sources("127.0.0.9-127.0.0.2").is_err());
    }
}
