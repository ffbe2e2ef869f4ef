//! The client's address and scheme: the TCP peer's, or, when the peer is a configured trusted proxy,
//! what the proxy says in `X-Forwarded-For` (the last hop that is not one of those proxies) and
//! `X-Forwarded-Proto`.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use ipnet::IpNet;

use super::AppState;

/// The address a request came from, for throttling and logs.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// The TCP peer of a request, as a plain IPv4 address when it came over IPv6 as an IPv4-mapped one.
pub fn peer(parts_extensions: &axum::http::Extensions) -> IpAddr {
    parts_extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_canonical())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// Resolves the client address from the peer and the request's `X-Forwarded-For` headers.
pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    if !is_trusted(peer, trusted) {
        return peer;
    }
    // Every X-Forwarded-For line, in order: a proxy may add its own line rather than append to one.
    let lines: Vec<&str> = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect();
    let hops = lines.iter().flat_map(|line| line.split(',')).map(str::trim).collect::<Vec<_>>();
    // Walk from the nearest hop outwards; the first address that is not our proxy is the client.
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        match hop.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
            Ok(ip) if is_trusted(ip, trusted) => client = ip,
            Ok(ip) => return ip,
            Err(_) => return client,
        }
    }
    client
}

/// The scheme the client used: `X-Forwarded-Proto` from a trusted proxy, else the connection's (http).
pub fn scheme<'a>(peer: IpAddr, headers: &'a HeaderMap, trusted: &[IpNet]) -> &'a str {
    let forwarded = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).map(str::trim);
    match forwarded {
        Some(proto @ ("http" | "https")) if is_trusted(peer, trusted) => proto,
        _ => "http",
    }
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(resolve(peer(&parts.extensions), &parts.headers, &state.config.trusted_proxies)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        let trusted = ["127.0.0.1/32".parse().unwrap()];
        let xff = |v: &'static str| headers(&[("x-forwarded-for", v)]);
        assert_eq!(resolve(proxy, &xff("203.0.113.7"), &trusted), client);
        assert_eq!(resolve(proxy, &xff("198.51.100.1, 203.0.113.7"), &trusted), client, "spoofed first hop ignored");
        assert_eq!(resolve(client, &xff("10.0.0.1"), &trusted), client, "untrusted peers cannot claim an address");
        assert_eq!(resolve(proxy, &xff("garbage"), &trusted), proxy);
        assert_eq!(resolve(proxy, &HeaderMap::new(), &trusted), proxy);
    }

    #[test]
    fn a_proxy_that_adds_its_own_line_is_read_after_the_clients() {
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        // The client sent the first line itself; the proxy added the second.
        let h = headers(&[("x-forwarded-for", "198.51.100.1"), ("x-forwarded-for", "203.0.113.7, 10.9.9.9")]);
        assert_eq!(resolve(proxy, &h, &trusted), "203.0.113.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn forwarded_proto_only_from_trusted_proxies() {
        let trusted = ["172.28.0.0/16".parse().unwrap()];
        let h = headers(&[("x-forwarded-proto", "https")]);
        assert_eq!(scheme("172.28.0.5".parse().unwrap(), &h, &trusted), "https");
        assert_eq!(scheme("203.0.113.7".parse().unwrap(), &h, &trusted), "http");
        assert_eq!(
            scheme("172.28.0.5".parse().unwrap(), &headers(&[("x-forwarded-proto", "gopher")]), &trusted),
            "http"
        );
    }
}
