//! Live streams after their head: served without hyper. hyper keeps two 8 KiB buffers for as
//! long as a connection lives (a write buffer made for every connection, and the read buffer of
//! its first read), which was most of what a live stream held: a chat widget's stream sends a
//! few hundred bytes an hour, for hours. So when a handler turns its connection into a stream,
//! hyper writes only the response's head, as an HTTP/1.0 answer whose body runs to the close of
//! the connection (no chunking), and finishes the connection without closing it; the server loop
//! takes the socket back and sends the body itself, while hyper's state and buffers are freed.
//! Browsers' `EventSource` and every HTTP/1.1 client read such an answer (a server may answer in
//! a lower minor version); it was `Connection: close` already.

use std::io::{self, ErrorKind};
use std::pin::{Pin, pin};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{HeaderValue, Version, header};
use axum::response::Response;
use futures_util::StreamExt;
use hyper::body::{Bytes, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Readies a live stream's `response` for hyper, which writes its head and nothing else, and
/// returns the body the server loop sends after it.
pub fn hand_over(response: &mut Response) -> Body {
    *response.version_mut() = Version::HTTP_10;
    let headers = response.headers_mut();
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::TRANSFER_ENCODING);
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    std::mem::replace(response.body_mut(), Body::new(HandedOver))
}

/// The body hyper sends for a handed-over stream: none, of unknown length, so hyper frames the
/// answer by the connection's close and ends the connection right after the head.
struct HandedOver;

impl hyper::body::Body for HandedOver {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Sends a handed-over stream's `body` on `stream` as it comes, then closes the connection. Ends
/// early if the client goes, stops reading (the stream's writes time out) or the body fails.
pub async fn send<S>(stream: &mut S, body: Body) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
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
        stream.write_all(&data.map_err(io::Error::other)?).await?;
    }
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handed_over_answer_is_framed_by_the_close_and_keeps_its_headers() {
        let mut response = Response::new(Body::from("data: 1\n\n"));
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("9"));
        let body = hand_over(&mut response);
        assert_eq!(response.version(), Version::HTTP_10);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/event-stream");
        assert_eq!(response.headers()[header::CONNECTION], "close");
        assert!(!response.headers().contains_key(header::CONTENT_LENGTH));
        use hyper::body::Body as _;
        let left = response.body();
        assert!(!left.is_end_stream() && left.size_hint().exact().is_none(), "hyper frames it by the close");
        assert_eq!(body.size_hint().exact(), Some(9), "the body itself is handed over");
    }
}
