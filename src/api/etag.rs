//! Conditional requests (RFC 9110 §13.1): the one place that reads `If-Match` and `If-None-Match`.
//! Both hold a list of entity tags (possibly over several header lines) or `*`; they differ only in
//! how tags compare.

use axum::http::{HeaderMap, HeaderName, header};

/// `If-None-Match` (weak comparison): the client already has this version, so 304 will do.
pub fn client_has(headers: &HeaderMap, etag: &str) -> bool {
    listed(headers, header::IF_NONE_MATCH, |tag| tag.trim_start_matches("W/") == etag).unwrap_or(false)
}

/// `If-Match` (strong comparison; a weak tag never matches): true when there is no `If-Match`, or
/// it names `etag`.
pub fn if_match_holds(headers: &HeaderMap, etag: &str) -> bool {
    listed(headers, header::IF_MATCH, |tag| tag == etag).unwrap_or(true)
}

/// Whether any tag of every `name` line is `*` or passes `matches`; `None` without such a header.
fn listed(headers: &HeaderMap, name: HeaderName, matches: impl Fn(&str) -> bool) -> Option<bool> {
    let mut lines = headers.get_all(name).iter().peekable();
    lines.peek()?;
    Some(
        lines
            .filter_map(|line| line.to_str().ok())
            .flat_map(|line| line.split(','))
            .map(str::trim)
            .any(|tag| tag == "*" || matches(tag)),
    )
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(name: HeaderName, lines: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(name.clone(), HeaderValue::from_static(line));
        }
        headers
    }

    #[test]
    fn if_none_match_compares_weakly_in_lists_and_star() {
        let listed = headers(header::IF_NONE_MATCH, &[r#""a-json", W/"b-json""#]);
        assert!(client_has(&listed, r#""b-json""#));
        assert!(!client_has(&listed, r#""c-json""#));
        assert!(client_has(&headers(header::IF_NONE_MATCH, &["*"]), r#""c-json""#));
        assert!(!client_has(&HeaderMap::new(), r#""c-json""#));
    }

    #[test]
    fn if_match_compares_strongly_and_holds_when_absent() {
        assert!(if_match_holds(&HeaderMap::new(), r#""1-a""#));
        assert!(if_match_holds(&headers(header::IF_MATCH, &[r#""x", "1-a""#]), r#""1-a""#));
        assert!(if_match_holds(&headers(header::IF_MATCH, &["*"]), r#""1-a""#));
        assert!(!if_match_holds(&headers(header::IF_MATCH, &[r#"W/"1-a""#]), r#""1-a""#));
        assert!(!if_match_holds(&headers(header::IF_MATCH, &[r#""1-b""#]), r#""1-a""#));
    }

    #[test]
    fn tags_may_be_spread_over_several_header_lines() {
        let split = headers(header::IF_MATCH, &[r#""x""#, r#""1-a""#]);
        assert!(if_match_holds(&split, r#""1-a""#));
        assert!(client_has(&headers(header::IF_NONE_MATCH, &[r#""x""#, r#""1-a""#]), r#""1-a""#));
    }
}
