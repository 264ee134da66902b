//! Files on tickets and comments: what the API shows of one, its name as the uploader gave it
//! (made safe to show and to put in a header), its content type as its bytes say, and the
//! single-use token that attaches an upload to a ticket or comment.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::refusal::Refusal;
use super::ticket::TicketId;
use super::user::UserId;

pub type AttachmentId = i64;

/// A file as a ticket or comment lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
#[schema(example = json!({"id": 3, "filename": "crash.log", "content_type": "text/plain; charset=utf-8", "size": 5120}))]
pub struct AttachmentRef {
    pub id: AttachmentId,
    /// The name the uploader gave it, without any folder part or control characters.
    pub filename: String,
    /// What its bytes are (judged from them, not from what the uploader claimed).
    pub content_type: String,
    /// In bytes.
    pub size: i64,
}

/// The files a ticket or comment lists, as stored beside it (a JSON array).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = Vec<AttachmentRef>)]
pub struct Attachments(pub Vec<AttachmentRef>);

impl TryFrom<String> for Attachments {
    type Error = String;

    fn try_from(column: String) -> Result<Self, String> {
        serde_json::from_str(&column).map_err(|e| format!("an attachments column does not read back: {e}"))
    }
}

impl Attachments {
    pub fn to_column(&self) -> String {
        serde_json::to_string(&self.0).expect("a list of plain records serializes")
    }
}

/// A file with its place: the metadata `GET /attachments/{id}` shows, and what access to it
/// depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
#[schema(example = json!({"id": 3, "filename": "crash.log", "content_type": "text/plain; charset=utf-8",
    "size": 5120, "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "ticket_id": 42, "comment_id": 7, "internal": false, "uploaded_by": 1, "created_at": "2026-07-23T12:10:00Z"}))]
pub struct Attachment {
    pub id: AttachmentId,
    pub filename: String,
    pub content_type: String,
    pub size: i64,
    /// SHA-256 of the bytes, in hex; also the download's ETag.
    pub sha256: String,
    /// The ticket it belongs to; null while it is an upload nothing references yet.
    pub ticket_id: Option<TicketId>,
    /// The comment it came with; null for a file on the ticket itself.
    pub comment_id: Option<i64>,
    /// On an internal note: staff only.
    pub internal: bool,
    #[sqlx(rename = "uploader_id")]
    pub uploaded_by: UserId,
    pub created_at: DateTime<Utc>,
    /// Not shown: where the bytes are.
    #[serde(skip)]
    pub storage_key: String,
}

impl Attachment {
    pub fn as_ref(&self) -> AttachmentRef {
        AttachmentRef {
            id: self.id,
            filename: self.filename.clone(),
            content_type: self.content_type.clone(),
            size: self.size,
        }
    }
}

/// A file name as the uploader gave it, made safe to show: its last path component (no `/`, `\`),
/// no control characters (no newline can reach a header), at most 255 characters; `file` when
/// nothing is left.
pub fn clean_filename(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last.chars().filter(|c| !c.is_control()).take(255).collect();
    let cleaned = cleaned.trim();
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        "file".to_owned()
    } else {
        cleaned.to_owned()
    }
}

/// `Content-Disposition` for a download: always `attachment` (never shown inline from the API's
/// origin), with an ASCII fallback name and the exact one in RFC 5987 encoding (RFC 6266).
pub fn content_disposition(filename: &str) -> String {
    let fallback: String =
        filename
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '%' | ';') || c == ' ' { c } else { '_' }
            })
            .collect();
    let mut encoded = String::new();
    for byte in filename.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// What a file's first bytes say it is. Only types we can tell by their magic numbers are named;
/// text that is valid UTF-8 is `text/plain` (HTML and SVG included: they are served as text, and
/// always as a download); anything else is `application/octet-stream`.
pub fn sniff_content_type(head: &[u8]) -> &'static str {
    const MAGIC: &[(&[u8], &str)] = &[
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"\xff\xd8\xff", "image/jpeg"),
        (b"GIF87a", "image/gif"),
        (b"GIF89a", "image/gif"),
        (b"%PDF-", "application/pdf"),
        (b"PK\x03\x04", "application/zip"),
        (b"\x1f\x8b", "application/gzip"),
    ];
    if let Some((_, content_type)) = MAGIC.iter().find(|(magic, _)| head.starts_with(magic)) {
        return content_type;
    }
    if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        return "image/webp";
    }
    // A multi-byte character may be cut at the end of the sample.
    let text = match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(error) => error.error_len().is_none() && head.len() - error.valid_up_to() < 4,
    };
    if text && !head.contains(&0) { "text/plain; charset=utf-8" } else { "application/octet-stream" }
}

/// How many of the first bytes [`sniff_content_type`] looks at.
pub const SNIFF_BYTES: usize = 512;

/// Most files one ticket or comment takes at once.
pub const MAX_PER_WRITE: usize = 10;

/// The upload tokens a write references, as the hashes the store keeps: each once, at most
/// [`MAX_PER_WRITE`].
pub fn parse_upload_tokens(tokens: &[String]) -> Result<Vec<String>, Refusal> {
    if tokens.len() > MAX_PER_WRITE {
        return Err(Refusal::Invalid(format!("at most {MAX_PER_WRITE} attachments per ticket or comment")));
    }
    let mut hashes: Vec<String> = Vec::with_capacity(tokens.len());
    for token in tokens {
        let hash = upload_token_hash(token);
        if hashes.contains(&hash) {
            return Err(Refusal::invalid("an upload token is listed twice"));
        }
        hashes.push(hash);
    }
    Ok(hashes)
}

/// A new upload token: `upl_` and 32 random bytes; only its hash is stored.
pub fn new_upload_token() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source is unavailable");
    format!("upl_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

pub fn upload_token_hash(token: &str) -> String {
    super::sha256_hex(&[b"upload", token.as_bytes()])
}

/// An upload nothing references yet, as its uploader sees it once the bytes are stored.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({"token": "upl_3q2-7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "expires_at": "2026-07-23T13:10:00Z",
    "attachment": {"id": 3, "filename": "crash.log", "content_type": "text/plain; charset=utf-8", "size": 5120,
    "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}}))]
pub struct Upload {
    /// Put it in `attachments` of a new ticket or comment; single use, yours only.
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub attachment: UploadedFile,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UploadedFile {
    pub id: AttachmentId,
    pub filename: String,
    pub content_type: String,
    pub size: i64,
    pub sha256: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_lose_folders_and_control_characters() {
        assert_eq!(clean_filename("../../etc/passwd"), "passwd");
        assert_eq!(clean_filename("C:\\Users\\me\\report.pdf"), "report.pdf");
        assert_eq!(clean_filename("evil\r\nSet-Cookie: x.txt"), "evilSet-Cookie: x.txt");
        assert_eq!(clean_filename(".."), "file");
        assert_eq!(clean_filename("dir/"), "file");
        assert_eq!(clean_filename("Grüße 📎.txt"), "Grüße 📎.txt");
        assert_eq!(clean_filename(&"a".repeat(300)).len(), 255);
    }

    #[test]
    fn downloads_are_attachments_with_a_safe_name_and_the_exact_one_encoded() {
        assert_eq!(
            content_disposition("a \"quoted\"; name.txt"),
            "attachment; filename=\"a _quoted__ name.txt\"; filename*=UTF-8''a%20%22quoted%22%3B%20name.txt"
        );
        let non_ascii = content_disposition("Grüße.txt");
        assert!(non_ascii.starts_with("attachment; filename=\"Gr__e.txt\""), "{non_ascii}");
        assert!(non_ascii.ends_with("filename*=UTF-8''Gr%C3%BC%C3%9Fe.txt"), "{non_ascii}");
    }

    #[test]
    fn content_types_come_from_the_bytes() {
        assert_eq!(sniff_content_type(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), "image/png");
        assert_eq!(sniff_content_type(b"%PDF-1.7\n"), "application/pdf");
        assert_eq!(sniff_content_type(b"<html><script>alert(1)</script>"), "text/plain; charset=utf-8");
        assert_eq!(sniff_content_type("Grüße".as_bytes()), "text/plain; charset=utf-8");
        assert_eq!(sniff_content_type(&"ü".as_bytes()[..1]), "text/plain; charset=utf-8", "a cut character");
        assert_eq!(sniff_content_type(b"\x00\x01\x02binary"), "application/octet-stream");
        assert_eq!(sniff_content_type(b"RIFF\0\0\0\0WEBPVP8 "), "image/webp");
    }

    #[test]
    fn a_write_lists_each_upload_once_and_not_too_many() {
        let tokens = |n: usize| (0..n).map(|i| format!("upl_{i}")).collect::<Vec<_>>();
        assert_eq!(parse_upload_tokens(&tokens(MAX_PER_WRITE)).unwrap().len(), MAX_PER_WRITE);
        assert!(parse_upload_tokens(&tokens(MAX_PER_WRITE + 1)).is_err());
        assert!(parse_upload_tokens(&["upl_a".into(), "upl_a".into()]).is_err());
        assert_ne!(upload_token_hash("upl_a"), upload_token_hash("upl_b"));
        assert!(new_upload_token().starts_with("upl_"));
    }
}
