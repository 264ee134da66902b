//! Request ids for requests that bring none: UUIDs (version 4 layout), made without a system call
//! per request. `MakeRequestUuid` asks the operating system for 16 random bytes every time; these
//! hash a counter with SipHash under keys drawn once at start, which is as unique and as
//! unguessable for a log id.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{HeaderValue, Request};
use tower_http::request_id::{MakeRequestId, RequestId};

#[derive(Clone)]
pub struct RequestIds(Arc<(RandomState, AtomicU64)>);

impl RequestIds {
    pub fn new() -> Self {
        Self(Arc::new((RandomState::new(), AtomicU64::new(0))))
    }

    fn next(&self) -> uuid::Uuid {
        let (keys, counter) = &*self.0;
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let half = |which: u64| {
            let mut hasher = keys.build_hasher();
            hasher.write_u64(n);
            hasher.write_u64(which);
            hasher.finish()
        };
        let bytes = ((u128::from(half(0)) << 64) | u128::from(half(1))).to_be_bytes();
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        let mut text = uuid::Uuid::encode_buffer();
        let id = self.next().hyphenated().encode_lower(&mut text);
        HeaderValue::from_str(id).ok().map(RequestId::new)
    }
}

#[cfg(test)]
mod tests {
    use super::RequestIds;

    #[test]
    fn ids_are_version_4_uuids_and_all_differ() {
        let ids = RequestIds::new();
        let made: std::collections::HashSet<uuid::Uuid> = (0..10_000).map(|_| ids.next()).collect();
        assert_eq!(made.len(), 10_000);
        assert!(made.iter().all(|id| id.get_version_num() == 4));
        let other = RequestIds::new();
        assert!(!made.contains(&other.next()), "another process (other keys) makes other ids");
    }
}
