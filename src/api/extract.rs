//! Axum's extractors, with their rejections answered as our problem+json instead of plain text.
//! Handlers use these, never `axum::Json` & co. directly.

use axum::extract::FromRequest;
use axum::extract::FromRequestParts;
use axum::extract::rejection::{FormRejection, JsonRejection, PathRejection, QueryRejection};
use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use crate::domain::{IdempotencyKey, UserId};
use crate::error::Error;
use crate::state::AppState;

#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(Error))]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

#[derive(FromRequest)]
#[from_request(via(axum::Form), rejection(Error))]
pub struct Form<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Error))]
pub struct Path<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Error))]
pub struct Query<T>(pub T);

macro_rules! rejection_into_error {
    ($($rejection:ty),*) => {$(
        impl From<$rejection> for Error {
            fn from(rejection: $rejection) -> Self {
                Error::Rejected { status: rejection.status(), detail: rejection.body_text() }
            }
        }
    )*};
}

rejection_into_error!(JsonRejection, FormRejection, PathRejection, QueryRejection);

/// For optional fields that may be left out but not sent as `null` (the schema says so; serde
/// alone would read `null` as "left out"): `#[serde(default, deserialize_with = "not_null")]`.
pub fn not_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    match <Option<T> as serde::Deserialize>::deserialize(deserializer)? {
        Some(value) => Ok(Some(value)),
        None => Err(serde::de::Error::custom("null is not allowed here; leave the field out instead")),
    }
}

/// An integer as JSON may write it: `2` or `2.0` (JSON Schema's `integer` allows both), not
/// `2.5` and nothing beyond `i64`.
pub struct WholeNumber(pub i64);

impl<'de> serde::Deserialize<'de> for WholeNumber {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = WholeNumber;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<WholeNumber, E> {
                Ok(WholeNumber(n))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<WholeNumber, E> {
                i64::try_from(n).map(WholeNumber).map_err(|_| E::custom("the integer is too large"))
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<WholeNumber, E> {
                // Within ±2^63, where every f64 with no fraction is an i64.
                if n.fract() == 0.0 && n.abs() < 9.223_372_036_854_775e18 {
                    Ok(WholeNumber(n as i64))
                } else {
                    Err(E::custom(format!("expected an integer, got {n}")))
                }
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// The client's IP address, for login throttling: the peer's, or, when the peer is a trusted
/// proxy (`TRUSTED_PROXIES`), the nearest address in `X-Forwarded-For` that is not one. Without
/// a connection (a request handed to the router in-process) it is `unknown`.
pub struct ClientAddress(pub String);

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
        Ok(ClientAddress(client_address(peer, &parts.headers, &state.trusted_proxies)))
    }
}

fn client_address(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpAddr]) -> String {
    let Some(peer) = peer else { return "unknown".to_owned() };
    if !trusted.contains(&peer) {
        return network_of(peer);
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
            Some(ip) if trusted.contains(&ip) => continue,
            Some(ip) => return network_of(ip),
            None => break,
        }
    }
    network_of(peer)
}

/// One `X-Forwarded-For` entry as proxies write them: `203.0.113.7`, `203.0.113.7:41234`,
/// `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:443`; the port, if any, is dropped.
fn forwarded_address(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|socket| socket.ip()))
        .ok()
        .or_else(|| hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

/// What one client controls: an IPv4 address, or an IPv6 /64 (one host usually gets a whole /64,
/// so counting single IPv6 addresses would let it pick a fresh one per guess).
fn network_of(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            let prefix =
                std::net::Ipv6Addr::new(segments[0], segments[1], segments[2], segments[3], 0, 0, 0, 0);
            format!("{prefix}/64")
        }
    }
}

/// The optional `Idempotency-Key` header of a create.
pub struct IdempotencyKeyHeader(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKeyHeader {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Error> {
        let mut values = parts.headers.get_all("idempotency-key").iter();
        match (values.next(), values.next()) {
            (None, _) => Ok(IdempotencyKeyHeader(None)),
            (Some(_), Some(_)) => {
                Err(Error::BadRequest("send one Idempotency-Key header, not several".into()))
            }
            (Some(value), None) => {
                let key = value.to_str().map_err(|_| {
                    Error::BadRequest("Idempotency-Key must be visible ASCII characters".into())
                })?;
                Ok(IdempotencyKeyHeader(Some(key.to_owned())))
            }
        }
    }
}

impl IdempotencyKeyHeader {
    /// The key for `user`'s `operation` with this `request` body, checked.
    pub fn for_request(
        self,
        user: UserId,
        operation: &str,
        request: &impl serde::Serialize,
    ) -> Result<Option<IdempotencyKey>, Error> {
        self.0
            .map(|key| IdempotencyKey::new(user, &key, operation, request).map_err(Error::BadRequest))
            .transpose()
    }
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

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let peer = "203.0.113.7".parse().ok();
        assert_eq!(client_address(peer, &forwarded(&["198.51.100.1"]), &[]), "203.0.113.7");
    }

    #[test]
    fn behind_trusted_proxies_the_nearest_untrusted_hop_is_the_client() {
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let trusted = [proxy, "10.0.0.2".parse().unwrap()];
        // The client forged the first entry; the proxies appended the rest.
        let headers = forwarded(&["6.6.6.6, 203.0.113.7", "10.0.0.2"]);
        assert_eq!(client_address(Some(proxy), &headers, &trusted), "203.0.113.7");
        assert_eq!(client_address(Some(proxy), &HeaderMap::new(), &trusted), "127.0.0.1");
        assert_eq!(client_address(Some(proxy), &forwarded(&["garbage"]), &trusted), "127.0.0.1");
        assert_eq!(client_address(None, &headers, &trusted), "unknown");
    }

    #[test]
    fn whole_numbers_may_be_written_with_a_zero_fraction() {
        let parse = |json: &str| serde_json::from_str::<WholeNumber>(json).map(|n| n.0);
        assert_eq!(parse("2").unwrap(), 2);
        assert_eq!(parse("2.0").unwrap(), 2);
        assert_eq!(parse("-7e0").unwrap(), -7);
        assert!(parse("2.5").is_err());
        assert!(parse("1e300").is_err());
        assert!(parse("18446744073709551615").is_err());
        assert!(parse("\"2\"").is_err());
    }

    #[test]
    fn forwarded_entries_with_ports_or_brackets_name_their_client() {
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        for (entry, client) in [
            ("203.0.113.7:41234", "203.0.113.7"),
            ("[2001:db8:1:2::7]", "2001:db8:1:2::/64"),
            ("[2001:db8:1:2::7]:443", "2001:db8:1:2::/64"),
            ("2001:db8:1:2::7", "2001:db8:1:2::/64"),
        ] {
            assert_eq!(client_address(Some(proxy), &forwarded(&[entry]), &[proxy]), client, "{entry}");
        }
        // Two clients behind one proxy keep two keys.
        let a = client_address(Some(proxy), &forwarded(&["203.0.113.7:1"]), &[proxy]);
        let b = client_address(Some(proxy), &forwarded(&["198.51.100.9:1"]), &[proxy]);
        assert_ne!(a, b);
        for garbage in ["[203.0.113.7", "203.0.113.7:", "[::1]x", "unknown"] {
            assert_eq!(
                client_address(Some(proxy), &forwarded(&[garbage]), &[proxy]),
                "10.0.0.2",
                "{garbage}"
            );
        }
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64_and_mapped_ipv4_is_plain_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let elsewhere: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let none = HeaderMap::new();
        assert_eq!(client_address(Some(a), &none, &[]), "2001:db8:1:2::/64");
        assert_eq!(client_address(Some(a), &none, &[]), client_address(Some(b), &none, &[]));
        assert_ne!(client_address(Some(a), &none, &[]), client_address(Some(elsewhere), &none, &[]));
        let mapped: IpAddr = "::ffff:203.0.113.7".parse().unwrap();
        assert_eq!(client_address(Some(mapped), &none, &[]), "203.0.113.7");
    }
}
