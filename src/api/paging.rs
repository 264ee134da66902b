//! Keyset pagination: a page is "up to `limit` rows after this key", never an OFFSET, so page N
//! costs what page 1 costs. The key travels as an opaque cursor; the next page is announced in a
//! `Link: <...>; rel="next"` header (the GitHub way) while the body stays a plain JSON array.

use axum::http::{HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use super::extract::Json;
use crate::error::{Error, Result};

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 200;

/// The query parameters of a plain listing: its page size and where to continue.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// Where to continue: the `cursor` from the previous page's `Link: rel="next"` header.
    #[param(min_length = 1)]
    pub cursor: Option<String>,
}

/// A page request: the key to continue after (from the cursor), and how many rows.
#[derive(Debug)]
pub struct Page<K> {
    pub after: Option<K>,
    pub limit: u32,
}

impl<K: Serialize + DeserializeOwned> Page<K> {
    pub fn from_query(limit: Option<u32>, cursor: Option<&str>) -> Result<Self> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(Error::BadRequest(format!("limit must be from 1 to {MAX_LIMIT} (got {limit})")));
        }
        let after = cursor.map(decode_cursor).transpose()?;
        Ok(Self { after, limit })
    }

    /// How many rows to fetch: one more than the page, to learn whether another page follows.
    pub fn fetch(&self) -> u32 {
        self.limit + 1
    }

    /// The page's rows as a JSON array, with a `Link` to the next page if there is one.
    pub fn respond<T: Serialize>(&self, uri: &Uri, mut rows: Vec<T>, key_of: impl Fn(&T) -> K) -> Response {
        let next = if rows.len() > self.limit as usize {
            rows.truncate(self.limit as usize);
            rows.last().map(|last| next_link(uri, &encode_cursor(&key_of(last))))
        } else {
            None
        };
        let mut response = Json(rows).into_response();
        if let Some(link) = next.and_then(|link| HeaderValue::from_str(&link).ok()) {
            response.headers_mut().insert(header::LINK, link);
        }
        response
    }
}

fn encode_cursor<K: Serialize>(key: &K) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(key).expect("page keys serialize"))
}

fn decode_cursor<K: DeserializeOwned>(cursor: &str) -> Result<K> {
    URL_SAFE_NO_PAD.decode(cursor).ok().and_then(|json| serde_json::from_slice(&json).ok()).ok_or_else(|| {
        Error::BadRequest("cursor is not one this server handed out; start again without it".into())
    })
}

/// This request's own URL with `cursor` replaced: every filter carries over to the next page.
fn next_link(uri: &Uri, cursor: &str) -> String {
    let mut pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(uri.query().unwrap_or_default()).unwrap_or_default();
    pairs.retain(|(name, _)| name != "cursor");
    pairs.push(("cursor".into(), cursor.into()));
    let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
    format!("<{}?{query}>; rel=\"next\"", uri.path())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let page = Page::<i64>::from_query(Some(10), Some(&encode_cursor(&42i64))).unwrap();
        assert_eq!((page.after, page.limit, page.fetch()), (Some(42), 10, 11));
        assert!(Page::<i64>::from_query(None, Some("!!not base64")).is_err());
        assert!(Page::<i64>::from_query(None, Some(&URL_SAFE_NO_PAD.encode("\"text\""))).is_err());
    }

    #[test]
    fn limit_defaults_to_fifty_and_stays_within_bounds() {
        assert_eq!(Page::<i64>::from_query(None, None).unwrap().limit, 50);
        assert!(Page::<i64>::from_query(Some(0), None).is_err());
        assert!(Page::<i64>::from_query(Some(201), None).is_err());
        assert_eq!(Page::<i64>::from_query(Some(200), None).unwrap().limit, 200);
    }

    #[test]
    fn next_link_keeps_the_filters_and_replaces_the_cursor() {
        let uri: Uri = "/tickets/?status=open&cursor=old&q=printer%20fire".parse().unwrap();
        let link = next_link(&uri, "NEW");
        assert_eq!(link, r#"</tickets/?status=open&q=printer+fire&cursor=NEW>; rel="next""#);
    }
}
