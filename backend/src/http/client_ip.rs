//! The client's address: the TCP peer, or, when the peer is a configured trusted proxy, the last
//! `X-Forwarded-For` hop that is not one of those proxies.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use super::AppState;

/// The address a request came from, for throttling and logs.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

/// Resolves the client address from the peer and the forwarding header.
pub fn resolve(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let Some(chain) = forwarded_for else { return peer };
    // Walk from the nearest hop outwards; the first address that is not our proxy is the client.
    let mut client = peer;
    for hop in chain.rsplit(',').map(str::trim) {
        match hop.parse::<IpAddr>() {
            Ok(ip) if trusted.contains(&ip) => client = ip,
            Ok(ip) => return ip,
            Err(_) => return client,
        }
    }
    client
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer =
            parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()).unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let forwarded = parts.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
        Ok(ClientIp(resolve(peer, forwarded, &state.config.trusted_proxies)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        let trusted = [proxy];
        assert_eq!(resolve(proxy, Some("203.0.113.7"), &trusted), client);
        assert_eq!(resolve(proxy, Some("198.51.100.1, 203.0.113.7"), &trusted), client, "spoofed first hop ignored");
        assert_eq!(resolve(client, Some("10.0.0.1"), &trusted), client, "untrusted peers cannot claim an address");
        assert_eq!(resolve(proxy, Some("garbage"), &trusted), proxy);
        assert_eq!(resolve(proxy, None, &trusted), proxy);
    }
}
