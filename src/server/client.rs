//! Who a client is, for everything counted per client (login throttling, open connections, live
//! streams): an IPv4 address or an IPv6 /64, read through trusted proxies' `X-Forwarded-For`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use axum::http::HeaderMap;

/// What one client controls: an IPv4 address, or an IPv6 /64 (one host usually gets a whole /64,
/// so counting single IPv6 addresses would let it pick a fresh one per attempt). An IPv4 address
/// seen as IPv6 (`::ffff:a.b.c.d`, as a listener on `[::]` sees IPv4 peers) is that IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    V4(Ipv4Addr),
    /// The /64 network, its host bits zero.
    V6(Ipv6Addr),
    /// A request handed to the router in-process, without a connection.
    Unknown,
}

impl ClientKey {
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::V4(v4),
            IpAddr::V6(v6) => {
                let s = v6.segments();
                Self::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        }
    }

    /// The client behind `peer`: the peer itself, or, when the peer is a trusted proxy, the
    /// nearest address in `X-Forwarded-For` that is not one.
    pub fn resolve(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpAddr]) -> Self {
        let Some(peer) = peer else { return Self::Unknown };
        if !is_trusted(peer, trusted) {
            return Self::of(peer);
        }
        // Each proxy appends the address it heard from; entries left of the first untrusted one
        // (from the right) were written by the client and prove nothing.
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        for hop in hops.iter().rev() {
            match forwarded_address(hop) {
                Some(ip) if is_trusted(ip, trusted) => continue,
                Some(ip) => return Self::of(ip),
                None => break,
            }
        }
        Self::of(peer)
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V4(v4) => write!(f, "{v4}"),
            Self::V6(network) => write!(f, "{network}/64"),
            Self::Unknown => f.write_str("unknown"),
        }
    }
}

/// Whether `ip` is one of the `trusted` proxies, IPv4-mapped IPv6 and IPv4 being one address.
pub fn is_trusted(ip: IpAddr, trusted: &[IpAddr]) -> bool {
    let ip = ip.to_canonical();
    trusted.iter().any(|proxy| proxy.to_canonical() == ip)
}

/// One `X-Forwarded-For` entry as proxies write them: `203.0.113.7`, `203.0.113.7:41234`,
/// `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:443`; the port, if any, is dropped.
fn forwarded_address(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|socket| socket.ip()))
        .ok()
        .or_else(|| hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    fn client(peer: &str, headers: &HeaderMap, trusted: &[IpAddr]) -> String {
        ClientKey::resolve(Some(peer.parse().unwrap()), headers, trusted).to_string()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        assert_eq!(client("203.0.113.7", &forwarded(&["198.51.100.1"]), &[]), "203.0.113.7");
    }

    #[test]
    fn behind_trusted_proxies_the_nearest_untrusted_hop_is_the_client() {
        let trusted = ["127.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
        // The client forged the first entry; the proxies appended the rest.
        let headers = forwarded(&["6.6.6.6, 203.0.113.7", "10.0.0.2"]);
        assert_eq!(client("127.0.0.1", &headers, &trusted), "203.0.113.7");
        assert_eq!(client("127.0.0.1", &HeaderMap::new(), &trusted), "127.0.0.1");
        assert_eq!(client("127.0.0.1", &forwarded(&["garbage"]), &trusted), "127.0.0.1");
        assert_eq!(ClientKey::resolve(None, &headers, &trusted), ClientKey::Unknown);
    }

    #[test]
    fn a_proxy_seen_through_a_dual_stack_listener_is_still_trusted() {
        // `[::]` hears an IPv4 proxy as ::ffff:a.b.c.d; either spelling may be configured.
        let headers = forwarded(&["203.0.113.7"]);
        for (configured, peer) in [("10.0.0.2", "::ffff:10.0.0.2"), ("::ffff:10.0.0.2", "10.0.0.2")] {
            let trusted = [configured.parse().unwrap()];
            assert_eq!(client(peer, &headers, &trusted), "203.0.113.7", "{configured} / {peer}");
        }
        // A mapped hop behind the proxy is trusted or not the same way.
        let trusted = ["10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap()];
        let headers = forwarded(&["203.0.113.7, ::ffff:10.0.0.3"]);
        assert_eq!(client("::ffff:10.0.0.2", &headers, &trusted), "203.0.113.7");
    }

    #[test]
    fn forwarded_entries_with_ports_or_brackets_name_their_client() {
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        for (entry, expected) in [
            ("203.0.113.7:41234", "203.0.113.7"),
            ("[2001:db8:1:2::7]", "2001:db8:1:2::/64"),
            ("[2001:db8:1:2::7]:443", "2001:db8:1:2::/64"),
            ("2001:db8:1:2::7", "2001:db8:1:2::/64"),
        ] {
            assert_eq!(client("10.0.0.2", &forwarded(&[entry]), &[proxy]), expected, "{entry}");
        }
        // Two clients behind one proxy keep two keys.
        let a = client("10.0.0.2", &forwarded(&["203.0.113.7:1"]), &[proxy]);
        let b = client("10.0.0.2", &forwarded(&["198.51.100.9:1"]), &[proxy]);
        assert_ne!(a, b);
        for garbage in ["[203.0.113.7", "203.0.113.7:", "[::1]x", "unknown"] {
            assert_eq!(client("10.0.0.2", &forwarded(&[garbage]), &[proxy]), "10.0.0.2", "{garbage}");
        }
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64_and_mapped_ipv4_is_plain_ipv4() {
        let none = HeaderMap::new();
        assert_eq!(client("2001:db8:1:2:aaaa::1", &none, &[]), "2001:db8:1:2::/64");
        assert_eq!(client("2001:db8:1:2:aaaa::1", &none, &[]), client("2001:db8:1:2:bbbb::2", &none, &[]));
        assert_ne!(client("2001:db8:1:2:aaaa::1", &none, &[]), client("2001:db8:1:3::1", &none, &[]));
        assert_eq!(client("::ffff:203.0.113.7", &none, &[]), "203.0.113.7");
    }
}
