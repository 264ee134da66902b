//! The optional malware scan: with `CLAMD_ADDR` set, each upload's bytes go to ClamAV's daemon
//! (its `INSTREAM` command over TCP) as they go to storage, and the verdict comes before the upload
//! is given a token. A file the scanner cannot judge is refused too: a scan that was asked for
//! never fails open.

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;

/// clamd's default `StreamChunkSize`; larger chunks of a stream are split to it.
const CHUNK_BYTES: usize = 64 * 1024;
/// clamd answers with one short line; anything longer is not clamd.
const REPLY_BYTES: u64 = 4096;

/// Where clamd listens.
#[derive(Debug, Clone)]
pub struct Scanner {
    addr: String,
}

/// One file on its way to clamd.
pub struct Scan {
    connection: BufWriter<TcpStream>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    /// The signature clamd found.
    Infected(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("the malware scanner could not be reached or broke off: {0}")]
    Io(#[from] std::io::Error),
    /// clamd answered, but with an error (a stream over its `StreamMaxLength`, say).
    #[error("the malware scanner refused the file: {0}")]
    Refused(String),
}

impl Scanner {
    pub fn new(addr: String) -> Self {
        Self { addr }
    }

    /// Opens a scan of one file.
    pub async fn start(&self) -> Result<Scan, ScanError> {
        let mut connection = BufWriter::with_capacity(CHUNK_BYTES + 4, TcpStream::connect(&self.addr).await?);
        connection.write_all(b"zINSTREAM\0").await?;
        Ok(Scan { connection })
    }
}

impl Scan {
    /// Sends the file's next bytes.
    pub async fn feed(&mut self, bytes: &[u8]) -> Result<(), ScanError> {
        for piece in bytes.chunks(CHUNK_BYTES) {
            let length = u32::try_from(piece.len()).expect("a chunk is at most 64 KiB");
            self.connection.write_all(&length.to_be_bytes()).await?;
            self.connection.write_all(piece).await?;
        }
        Ok(())
    }

    /// Ends the file and waits for clamd's judgement of it.
    pub async fn verdict(mut self) -> Result<Verdict, ScanError> {
        self.connection.write_all(&0u32.to_be_bytes()).await?;
        self.connection.flush().await?;
        let mut reply = Vec::new();
        self.connection.into_inner().take(REPLY_BYTES).read_to_end(&mut reply).await?;
        parse_reply(&reply)
    }
}

/// `stream: OK`, `stream: <signature> FOUND`, or `<why> ERROR`, ended by a NUL.
fn parse_reply(reply: &[u8]) -> Result<Verdict, ScanError> {
    let reply = String::from_utf8_lossy(reply);
    let reply = reply.trim_end_matches(['\0', '\n']).trim();
    let answer = reply.strip_prefix("stream:").map(str::trim);
    match answer {
        Some("OK") => Ok(Verdict::Clean),
        Some(found) if found.ends_with(" FOUND") => {
            Ok(Verdict::Infected(found.trim_end_matches(" FOUND").trim().to_owned()))
        }
        _ => Err(ScanError::Refused(reply.chars().take(200).collect())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamd_replies_are_read_as_verdicts() {
        assert_eq!(parse_reply(b"stream: OK\0").unwrap(), Verdict::Clean);
        assert_eq!(
            parse_reply(b"stream: Win.Test.EICAR_HDB-1 FOUND\0").unwrap(),
            Verdict::Infected("Win.Test.EICAR_HDB-1".into())
        );
        assert!(matches!(
            parse_reply(b"INSTREAM size limit exceeded. ERROR\0"),
            Err(ScanError::Refused(why)) if why.contains("size limit")
        ));
        assert!(matches!(parse_reply(b""), Err(ScanError::Refused(_))));
    }
}
