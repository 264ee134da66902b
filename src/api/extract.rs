//! Axum's extractors, with their rejections answered as our problem+json instead of plain text.
//! Handlers use these, never `axum::Json` & co. directly.

use axum::extract::FromRequest;
use axum::extract::FromRequestParts;
use axum::extract::rejection::{FormRejection, JsonRejection, PathRejection, QueryRejection};
use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use crate::domain::{IdempotencyKey, UserId};
use crate::error::Error;
use crate::server::ClientKey;
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

pub use crate::domain::WholeNumber;

/// Who the client is, for login throttling and the per-client stream cap: the peer's address,
/// or, when the peer is a trusted proxy (`TRUSTED_PROXIES`), the nearest address in
/// `X-Forwarded-For` that is not one (see [`ClientKey::resolve`]). Without a connection (a
/// request handed to the router in-process) it is `unknown`.
pub struct ClientAddress(pub ClientKey);

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
        Ok(ClientAddress(ClientKey::resolve(peer, &parts.headers, &state.trusted_proxies)))
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
        self.0.map(|key| IdempotencyKey::new(user, &key, operation, request).map_err(Error::from)).transpose()
    }
}
