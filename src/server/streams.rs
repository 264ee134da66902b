//! Live streams served without hyper. hyper keeps two 8 KiB buffers for as long as a connection
//! lives (a write buffer made for every connection, and the read buffer of its first read),
//! which is most of what a live stream held: a chat widget's stream sends a few hundred bytes an
//! hour, for hours. So a new connection whose first request has arrived whole, and asks for a
//! stream route with GET and no body, is answered here: the request goes through the same
//! router (every layer and check as before), the response's head is written by hand, its body
//! chunked, and the connection closes when the body ends or the client goes. Everything else
//! (other routes, other methods, a head that arrives in pieces, HTTP/1.0) goes to hyper.

use std::io::{self, ErrorKind};
use std::pin::pin;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version, header};
use axum::response::Response;
use futures_util::StreamExt;
use hyper::body::Body as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// What the first peek looks at: a stream request's head is a few hundred bytes; one larger than
/// this goes to hyper, which allows up to `MAX_HEAD_BYTES`.
const PEEK_BYTES: usize = 4096;
/// Headers a stream request may have for this path (hyper allows 100).
const MAX_HEADERS: usize = 32;

/// Which requests are live streams: a path (without its query) to yes or no.
pub type StreamRoutes = fn(&str) -> bool;

/// What a new connection's first bytes say.
pub enum FirstRequest {
    /// A stream request, whole; its head is still unread on the socket, `head_len` bytes.
    Stream { request: Box<Request<Body>>, head_len: usize },
    /// Anything else: hyper reads it (nothing was consumed).
    Other,
    /// The client closed, failed, or sent nothing within the header timeout.
    Gone,
}

/// Looks at what the client has sent, without consuming it, once something has arrived. A peek
/// that sees a partial head is not repeated (a second peek returns at once with the same bytes):
/// such a connection is hyper's, and so is any client sending its head slowly (the server loop
/// holds its first head to the timeout counted from here, not from when hyper starts).
pub async fn first_request(
    stream: &TcpStream,
    header_read_timeout: Duration,
    routes: StreamRoutes,
) -> FirstRequest {
    // The bytes are looked at within the poll, on its stack: a buffer held across the wait would
    // be part of every connection's task for as long as it lives.
    let peek = std::future::poll_fn(|cx| {
        let mut bytes = [0u8; PEEK_BYTES];
        let mut peeked = ReadBuf::new(&mut bytes);
        stream.poll_peek(cx, &mut peeked).map(|read| match read {
            Ok(0) | Err(_) => FirstRequest::Gone,
            Ok(_) => match parse(peeked.filled(), routes) {
                Some((request, head_len)) => FirstRequest::Stream { request: Box::new(request), head_len },
                None => FirstRequest::Other,
            },
        })
    });
    tokio::time::timeout(header_read_timeout, peek).await.unwrap_or(FirstRequest::Gone)
}

/// A whole GET head for a stream route, with no body, as a request; `None` for anything else.
fn parse(bytes: &[u8], routes: StreamRoutes) -> Option<(Request<Body>, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(head_len) = head.parse(bytes).ok()? else { return None };
    let path = head.path?;
    if head.method? != "GET" || head.version? != 1 || !routes(path.split('?').next().unwrap_or(path)) {
        return None;
    }
    let mut request = Request::new(Body::empty());
    *request.method_mut() = Method::GET;
    *request.version_mut() = Version::HTTP_11;
    *request.uri_mut() = path.parse::<Uri>().ok()?;
    let map = request.headers_mut();
    for field in head.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes()).ok()?;
        // A body, or a request to switch protocols, is hyper's to handle.
        if [header::CONTENT_LENGTH, header::TRANSFER_ENCODING, header::UPGRADE, header::EXPECT]
            .contains(&name)
        {
            return None;
        }
        map.append(name, HeaderValue::from_bytes(field.value).ok()?);
    }
    Some((request, head_len))
}

/// Takes the peeked head off the socket (it has arrived, so this does not wait).
pub async fn consume_head(stream: &mut TcpStream, head_len: usize) -> io::Result<()> {
    let mut head = vec![0u8; head_len];
    stream.read_exact(&mut head).await.map(|_| ())
}

/// Writes `response` on `stream` (`Connection: close`; the body chunked unless its length is
/// known), then shuts the connection. Ends early, without the last chunk, if the client goes or
/// stops reading (the stream's writes time out) or the body fails.
pub async fn answer<S>(stream: &mut S, response: Response) -> io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (parts, body) = response.into_parts();
    let length = body.size_hint().exact();
    let chunked = length.is_none();
    let head = response_head(parts.status, &parts.headers, length);
    // Not kept for the stream's life: the headers are a kilobyte or more.
    drop(parts);
    stream.write_all(&head).await?;
    drop(head);
    let mut body = pin!(body.into_data_stream());
    // Bytes the client sends after its request are not read (nothing more is answered on this
    // connection); a read only tells when it closes. A client that sends more loses that signal,
    // and finds its stream closed at the next write that fails.
    let mut probe = [0u8; 1];
    let mut watching = true;
    loop {
        let next = tokio::select! {
            data = body.next() => data,
            read = stream.read(&mut probe), if watching => match read {
                Ok(0) => return Err(ErrorKind::ConnectionAborted.into()),
                Ok(_) => { watching = false; continue }
                Err(error) => return Err(error),
            },
        };
        let Some(data) = next else { break };
        let data = data.map_err(io::Error::other)?;
        if data.is_empty() {
            continue;
        }
        if chunked {
            let mut chunk = Vec::with_capacity(data.len() + 12);
            chunk.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            chunk.extend_from_slice(&data);
            chunk.extend_from_slice(b"\r\n");
            stream.write_all(&chunk).await?;
        } else {
            stream.write_all(&data).await?;
        }
    }
    if chunked {
        stream.write_all(b"0\r\n\r\n").await?;
    }
    stream.shutdown().await
}

/// The status line and headers, with `Date`, the body's framing and `Connection: close`.
fn response_head(status: axum::http::StatusCode, headers: &HeaderMap, length: Option<u64>) -> Vec<u8> {
    let mut head = Vec::with_capacity(512);
    let reason = status.canonical_reason().unwrap_or("");
    head.extend_from_slice(format!("HTTP/1.1 {} {reason}\r\n", status.as_u16()).as_bytes());
    for (name, value) in headers {
        // Framing and persistence are this writer's to say.
        if [header::CONTENT_LENGTH, header::TRANSFER_ENCODING, header::CONNECTION].contains(name) {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if !headers.contains_key(header::DATE) {
        let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT");
        head.extend_from_slice(format!("date: {date}\r\n").as_bytes());
    }
    let framing = match length {
        // No body may follow these, whatever the headers say.
        _ if status.is_informational() || status == 204 || status == 304 => String::new(),
        Some(length) => format!("content-length: {length}\r\n"),
        None => "transfer-encoding: chunked\r\n".to_owned(),
    };
    head.extend_from_slice(framing.as_bytes());
    head.extend_from_slice(b"connection: close\r\n\r\n");
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_paths(path: &str) -> bool {
        path.starts_with("/streams/")
    }

    fn parsed(head: &str) -> Option<(Request<Body>, usize)> {
        parse(head.as_bytes(), stream_paths)
    }

    #[test]
    fn a_whole_get_for_a_stream_route_is_taken_with_its_headers_and_query() {
        let head = "GET /streams/7?from=1 HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\nX-A: 1\r\nX-A: 2\r\n\r\n";
        let (request, head_len) = parsed(&format!("{head}next")).expect("a stream request");
        assert_eq!(head_len, head.len(), "only the head is taken");
        assert_eq!(request.uri(), "/streams/7?from=1");
        assert_eq!(request.headers()["accept"], "text/event-stream");
        assert_eq!(request.headers().get_all("x-a").iter().count(), 2);
    }

    #[test]
    fn everything_else_is_left_to_hyper() {
        for head in [
            "GET /tickets HTTP/1.1\r\nHost: t\r\n\r\n",
            "POST /streams/7 HTTP/1.1\r\nHost: t\r\n\r\n",
            "GET /streams/7 HTTP/1.0\r\nHost: t\r\n\r\n",
            "GET /streams/7 HTTP/1.1\r\nHost: t\r\n",
            "GET /streams/7 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            "GET /streams/7 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /streams/7 HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "GET /streams/7 HTTP/1.1\r\nX-Bad: \u{1}\r\n\r\n",
            "GET /streams/7 HTTP/1.1\r\nBad Name: 1\r\n\r\n",
        ] {
            assert!(parsed(head).is_none(), "{head:?}");
        }
        let many: String = (0..=MAX_HEADERS).map(|n| format!("X-{n}: 1\r\n")).collect();
        assert!(parsed(&format!("GET /streams/7 HTTP/1.1\r\n{many}\r\n")).is_none(), "too many headers");
    }

    #[test]
    fn the_head_says_date_framing_and_close_and_drops_the_handlers_own() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("gzip"));
        let streamed = String::from_utf8(response_head(axum::http::StatusCode::OK, &headers, None)).unwrap();
        assert!(
            streamed.starts_with("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ndate: "),
            "{streamed}"
        );
        assert!(
            streamed.ends_with(" GMT\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"),
            "{streamed}"
        );
        assert!(!streamed.contains("keep-alive") && !streamed.contains("gzip"), "{streamed}");
        let sized =
            String::from_utf8(response_head(axum::http::StatusCode::NOT_FOUND, &HeaderMap::new(), Some(12)))
                .unwrap();
        assert!(
            sized.starts_with("HTTP/1.1 404 Not Found\r\n") && sized.contains("content-length: 12\r\n"),
            "{sized}"
        );
        let none = String::from_utf8(response_head(
            axum::http::StatusCode::NOT_MODIFIED,
            &HeaderMap::new(),
            Some(0),
        ))
        .unwrap();
        assert!(!none.contains("content-length") && !none.contains("chunked"), "{none}");
    }
}
