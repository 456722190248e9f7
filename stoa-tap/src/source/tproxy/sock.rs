//! Socket set-up with `socket2` (no `unsafe`): the transparent listener and
//! the upstream sockets.

use super::{TproxyConfig, TproxyError};
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use std::net::{IpAddr, SocketAddr};

/// The transparent listening socket, non-blocking, ready for tokio.
pub(super) fn listener(cfg: &TproxyConfig) -> Result<std::net::TcpListener, TproxyError> {
    let addr = cfg.listen;
    let err = |what: &'static str| move |source| TproxyError::Socket { addr, what, source };
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(err("socket"))?;
    s.set_reuse_address(true).map_err(err("SO_REUSEADDR"))?;
    match addr {
        SocketAddr::V6(_) => {
            s.set_only_v6(false).map_err(err("IPV6_V6ONLY off"))?;
            s.set_ip_transparent_v6(true)
                .map_err(err("IPV6_TRANSPARENT (needs CAP_NET_ADMIN)"))?;
            // Dual stack: IPv4 connections arrive as IPv4-mapped addresses on
            // this socket; the IPv4 TPROXY rule needs the IPv4 option too.
            s.set_ip_transparent_v4(true)
                .map_err(err("IP_TRANSPARENT (needs CAP_NET_ADMIN)"))?;
        }
        SocketAddr::V4(_) => {
            s.set_ip_transparent_v4(true)
                .map_err(err("IP_TRANSPARENT (needs CAP_NET_ADMIN)"))?;
        }
    }
    s.set_nonblocking(true).map_err(err("O_NONBLOCK"))?;
    s.bind(&addr.into()).map_err(err("bind"))?;
    s.listen(cfg.backlog).map_err(err("listen"))?;
    Ok(s.into())
}

/// An IPv4-mapped IPv6 address as the plain IPv4 address it stands for.
pub(super) fn canonical(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => a,
        },
        SocketAddr::V4(_) => a,
    }
}

/// An unconnected upstream socket toward `server`: marked, and (spoofing)
/// transparent and bound to the client's IP (an ephemeral port, so the
/// upstream 4-tuple never collides with the diverted one in conntrack).
pub(super) fn upstream(
    cfg: &TproxyConfig,
    client: SocketAddr,
    server: SocketAddr,
) -> std::io::Result<tokio::net::TcpSocket> {
    let s = Socket::new(
        Domain::for_address(server),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    if cfg.upstream_mark != 0 {
        s.set_mark(cfg.upstream_mark)?;
    }
    s.set_tcp_nodelay(true)?;
    if spoofs(cfg, client, server) {
        match server {
            SocketAddr::V4(_) => s.set_ip_transparent_v4(true)?,
            SocketAddr::V6(_) => s.set_ip_transparent_v6(true)?,
        }
        s.bind(&SocketAddr::new(client.ip(), 0).into())?;
    }
    s.set_nonblocking(true)?;
    let std: std::net::TcpStream = s.into();
    Ok(tokio::net::TcpSocket::from_std_stream(std))
}

/// True if `ip` is an address of this host (this network namespace).
///
/// A connected UDP socket asks the routing table without sending anything:
/// a local destination is reached through a `local` route whose source
/// address is the destination itself. (Binding to the address would also
/// succeed for foreign addresses under `ip_nonlocal_bind`.)
pub(super) fn is_local_address(ip: IpAddr) -> bool {
    if ip.is_loopback() || ip.is_unspecified() {
        return true;
    }
    let any: IpAddr = match ip {
        IpAddr::V4(_) => IpAddr::from([0u8; 4]),
        IpAddr::V6(_) => IpAddr::from([0u16; 8]),
    };
    let probe = std::net::UdpSocket::bind(SocketAddr::new(any, 0))
        .and_then(|s| s.connect(SocketAddr::new(ip, 9)).map(|()| s))
        .and_then(|s| s.local_addr());
    matches!(probe, Ok(src) if src.ip() == ip)
}

/// True when `spoof_client` applies to this connection: the upstream socket
/// then binds to the client's address (same family as the server's).
pub(super) fn spoofs(cfg: &TproxyConfig, client: SocketAddr, server: SocketAddr) -> bool {
    cfg.spoof_client && client.is_ipv4() == server.is_ipv4()
}

/// Makes the next close of this socket send a RST (SO_LINGER 0).
pub(super) fn reset_on_close(s: &tokio::net::TcpStream) {
    let _ = SockRef::from(s).set_linger(Some(std::time::Duration::ZERO));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_addresses_are_recognised() {
        assert!(is_local_address(IpAddr::from([127, 0, 0, 1])));
        assert!(is_local_address(IpAddr::from([127, 1, 2, 3])));
        assert!(is_local_address("::1".parse().expect("ip")));
        // TEST-NET-1 is nobody's address.
        assert!(!is_local_address(IpAddr::from([192, 0, 2, 1])));
        // This host's own outgoing address, when it has a route out.
        let own = std::net::UdpSocket::bind("0.0.0.0:0")
            .and_then(|s| s.connect("192.0.2.1:9").map(|()| s))
            .and_then(|s| s.local_addr());
        if let Ok(own) = own {
            assert!(is_local_address(own.ip()), "{own} is local");
        }
    }

    #[test]
    fn spoofing_applies_to_same_family_pairs_only() {
        let cfg = TproxyConfig {
            spoof_client: true,
            ..TproxyConfig::default()
        };
        let c4: SocketAddr = "10.0.0.1:4000".parse().expect("addr");
        let s4: SocketAddr = "10.0.0.2:5555".parse().expect("addr");
        let s6: SocketAddr = "[fd00::2]:5555".parse().expect("addr");
        assert!(spoofs(&cfg, c4, s4));
        assert!(!spoofs(&cfg, c4, s6));
        assert!(!spoofs(&TproxyConfig::default(), c4, s4));
    }
}
