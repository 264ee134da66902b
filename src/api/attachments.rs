//! Files: upload first (`POST /uploads`), then reference the upload's token from a new ticket or
//! comment; read and download them where their ticket or comment is visible.

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use utoipa::ToSchema;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use super::extract::{Json, Path};
use crate::auth::CurrentUser;
use crate::domain::attachment::{
    Upload, UploadedFile, clean_filename, content_disposition, new_upload_token, upload_token_hash,
};
use crate::domain::{Attachment, AttachmentId, User, access, allow};
use crate::error::{Error, Result};
use crate::files::{Files, WriteError};
use crate::scan::{ScanError, Verdict};
use crate::state::AppState;

const NOT_FOUND: Error = Error::NotFound("attachment not found");

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_attachment, delete_attachment)).routes(routes!(download))
}

/// `POST /uploads`, apart: it has a deadline of its own. `max_upload_bytes`: the largest file; the
/// whole request may carry a little more (the form).
pub fn upload_router(max_upload_bytes: u64) -> OpenApiRouter<AppState> {
    let request_limit = usize::try_from(max_upload_bytes).unwrap_or(usize::MAX).saturating_add(64 * 1024);
    OpenApiRouter::new().routes(routes!(upload).layer(DefaultBodyLimit::max(request_limit)))
}

/// The form `POST /uploads` takes.
#[derive(ToSchema)]
#[allow(dead_code)]
struct UploadForm {
    /// The file. Its name is kept (without folders or control characters); its content type is
    /// judged from its bytes.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// Upload a file (anyone signed in), to send with a new ticket or comment.
///
/// The answer's `token` goes in `attachments` of `POST /tickets/` or `POST /tickets/{id}/comments`;
/// it is single-use, only yours, and expires (`expires_at`), after which the upload is removed.
/// Files larger than the server's limit (25 MiB unless configured) are refused with 413 and not
/// kept. With a malware scanner configured, each file is scanned before it gets its token: an
/// infected one is refused with 422, and one the scanner cannot judge with 503.
#[utoipa::path(
    post,
    path = "/uploads",
    tag = "attachments",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    security(("oauth2" = [])),
    responses(
        (status = 201, description = "Stored; reference it by its token", body = Upload),
        (status = 400, response = super::docs::BadRequest),
        (status = 401, response = super::docs::Unauthorized),
        (status = 413, response = super::docs::PayloadTooLarge),
        (status = 422, description = "The malware scanner (`CLAMD_ADDR`) found something; the file was not kept",
            body = crate::error::Problem, content_type = "application/problem+json",
            example = json!({"type": "about:blank", "title": "Unprocessable Entity", "status": 422,
                "detail": "the file carries malware (Eicar-Test-Signature) and was not kept"})),
        (status = 429, response = super::docs::TooManyRequests),
        (status = 503, description = "The malware scanner could not judge the file (unreachable, or over its size limit); the file was not kept",
            body = crate::error::Problem, content_type = "application/problem+json",
            example = json!({"type": "about:blank", "title": "Service Unavailable", "status": 503,
                "detail": "the malware scanner could not be reached or broke off: Connection refused (os error 111); the file was not kept, try again later"})),
    )
)]
async fn upload(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    mut form: Multipart,
) -> Result<(StatusCode, Json<Upload>)> {
    let settings = &state.attachments;
    let _slot = state.upload_slots.take(user.id).ok_or(Error::ClientLimit(
        "you are sending as many files at once as one user may; wait for one to finish",
    ))?;
    let field = loop {
        match form
            .next_field()
            .await
            .map_err(|e| Error::Rejected { status: e.status(), detail: e.body_text() })?
        {
            Some(field) if field.name() == Some("file") => break field,
            Some(_) => continue,
            None => return Err(Error::BadRequest("the form has no `file` field".into())),
        }
    };
    let filename = clean_filename(field.file_name().unwrap_or_default());
    let key = Files::new_key();
    let expires_at = Utc::now() + settings.upload_ttl;
    let pending_cap = settings.pending_per_user as u64;
    let id = state.store.begin_upload(user.id, &key, &filename, expires_at, pending_cap).await?;
    let stored = store_upload(&state, id, &key, &filename, field).await;
    let (attachment, token) = match stored {
        Ok(stored) => stored,
        Err(error) => {
            // Its bytes go now and its row too, or the sweeper takes both.
            discard_upload(&state, id, &key).await;
            return Err(error);
        }
    };
    let attachment = UploadedFile {
        id: attachment.id,
        filename: attachment.filename,
        content_type: attachment.content_type,
        size: attachment.size,
        sha256: attachment.sha256,
    };
    Ok((StatusCode::CREATED, Json(Upload { token, expires_at, attachment })))
}

/// Writes an upload's bytes (scanning them, with a scanner set) and completes its row.
async fn store_upload(
    state: &AppState,
    id: AttachmentId,
    key: &str,
    filename: &str,
    field: axum::extract::multipart::Field<'_>,
) -> Result<(Attachment, String)> {
    let settings = &state.attachments;
    let mut scan = match &settings.scanner {
        Some(scanner) => Some(scanner.start().await.map_err(scanner_failed)?),
        None => None,
    };
    let written = state.files.write(key, field, settings.max_bytes, filename, scan.as_mut()).await.map_err(
        |error| match error {
            WriteError::TooLarge(max) => Error::Rejected {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                detail: format!("the file is larger than {max} bytes, the most this server takes"),
            },
            WriteError::Body(detail) => Error::BadRequest(detail),
            WriteError::Storage(error) => Error::Internal(format!("storing an upload failed: {error}")),
            WriteError::Scan(error) => scanner_failed(error),
        },
    )?;
    if let Some(scan) = scan {
        match scan.verdict().await.map_err(scanner_failed)? {
            Verdict::Clean => {}
            Verdict::Infected(signature) => {
                tracing::warn!(upload = id, signature, "refused an infected upload");
                return Err(Error::Validation(format!(
                    "the file carries malware ({signature}) and was not kept"
                )));
            }
        }
    }
    let token = new_upload_token();
    let attachment = state
        .store
        .finish_upload(id, written.content_type, written.size, &written.sha256, &upload_token_hash(&token))
        .await?;
    Ok((attachment, token))
}

/// Removes what a failed upload left: its bytes, then its row (kept if the bytes stay, so the
/// sweeper still finds them).
async fn discard_upload(state: &AppState, id: AttachmentId, key: &str) {
    if let Err(error) = state.files.delete(key).await {
        tracing::warn!(%error, upload = id, "removing a failed upload's bytes failed; the sweeper retries");
        return;
    }
    if let Err(error) = state.store.forget_uploads(&[id]).await {
        tracing::warn!(%error, upload = id, "forgetting a failed upload failed; the sweeper removes it");
    }
}

fn scanner_failed(error: ScanError) -> Error {
    tracing::error!(%error, "the malware scan failed; the upload is refused");
    Error::Unavailable(format!("{error}; the file was not kept, try again later"))
}

/// The file, if the caller may see it; otherwise the same 404 as a missing one.
async fn visible_attachment(state: &AppState, user: &User, id: AttachmentId) -> Result<Attachment> {
    let attachment = state.store.attachment(id).await?.ok_or(NOT_FOUND)?;
    let ticket = match attachment.ticket_id {
        Some(ticket) => state.store.ticket(ticket).await?,
        None => None,
    };
    if access::can_see_attachment(user, &attachment, ticket.as_ref()) {
        Ok(attachment)
    } else {
        Err(NOT_FOUND)
    }
}

/// A file's details: name, type, size, hash, and where it belongs.
#[utoipa::path(
    get,
    path = "/attachments/{id}",
    tag = "attachments",
    params(("id" = AttachmentId, Path, description = "Attachment id")),
    security(("oauth2" = [])),
    responses(
        (status = 200, description = "The file's details", body = Attachment),
        super::docs::LookupErrors,
    )
)]
async fn get_attachment(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<AttachmentId>,
) -> Result<Json<Attachment>> {
    Ok(Json(visible_attachment(&state, &user, id).await?))
}

/// Download a file: always as a download, never shown inline; `Range` requests are served.
///
/// Where the server is set to (S3 storage with `S3_PRESIGNED_URL_SECS`), the answer is instead a
/// redirect to a short-lived presigned URL on the storage service, which serves the bytes itself.
#[utoipa::path(
    get,
    path = "/attachments/{id}/content",
    tag = "attachments",
    params(
        ("id" = AttachmentId, Path, description = "Attachment id"),
        ("Range" = Option<String>, Header, description = "One byte range, e.g. `bytes=0-1023`"),
    ),
    security(("oauth2" = [])),
    responses(
        (status = 200, description = "The file, as the type its bytes are", content_type = "*/*", body = String,
            headers(("ETag" = String, description = "The file's SHA-256"),
                    ("Content-Disposition" = String, description = "`attachment`, with the file's name"))),
        (status = 206, description = "The range asked for", content_type = "*/*", body = String,
            headers(("Content-Range" = String, description = "`bytes start-end/size`"))),
        (status = 304, description = "Unchanged since the ETag in If-None-Match"),
        (status = 307, description = "With S3 storage and `S3_PRESIGNED_URL_SECS` set: fetch the file from `Location`, \
a presigned URL valid that long (the object carries the same type and `attachment` disposition)",
            headers(("Location" = String, description = "The presigned URL"))),
        (status = 416, description = "The range lies outside the file"),
        super::docs::LookupErrors,
    )
)]
async fn download(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<AttachmentId>,
    headers: HeaderMap,
) -> Result<Response> {
    let attachment = visible_attachment(&state, &user, id).await?;
    let presigned = state
        .files
        .presigned_url(&attachment.storage_key)
        .await
        .map_err(|e| Error::Internal(format!("presigning attachment {id} failed: {e}")))?;
    if let Some(url) = presigned {
        // Access was checked above; the URL works for anyone until it expires, so no cache keeps it.
        return Ok(Response::builder()
            .status(StatusCode::TEMPORARY_REDIRECT)
            .header(header::LOCATION, url)
            .header(header::CACHE_CONTROL, "no-store")
            .body(Body::empty())
            .expect("valid headers"));
    }
    let size = u64::try_from(attachment.size).unwrap_or(0);
    let etag = format!("\"{}\"", attachment.sha256);
    let mut response = Response::builder()
        .header(header::CONTENT_TYPE, &attachment.content_type)
        .header(header::CONTENT_DISPOSITION, content_disposition(&attachment.filename))
        // Whatever the bytes are, nothing runs in the API's origin.
        .header(header::CONTENT_SECURITY_POLICY, "sandbox; default-src 'none'")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::CACHE_CONTROL, "private, no-cache")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, &etag);
    if headers.get(header::IF_NONE_MATCH).is_some_and(|value| value.as_bytes() == etag.as_bytes()) {
        return Ok(response.status(StatusCode::NOT_MODIFIED).body(Body::empty()).expect("valid headers"));
    }
    let if_range_holds =
        headers.get(header::IF_RANGE).is_none_or(|value| value.as_bytes() == etag.as_bytes());
    let range = match headers.get(header::RANGE).filter(|_| if_range_holds).and_then(|r| r.to_str().ok()) {
        None => None,
        Some(raw) => match byte_range(raw, size) {
            RangeAsked::Whole => None,
            RangeAsked::Part(range) => Some(range),
            RangeAsked::Unsatisfiable => {
                return Ok(response
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header(header::CONTENT_RANGE, format!("bytes */{size}"))
                    .body(Body::empty())
                    .expect("valid headers"));
            }
        },
    };
    let bytes = state
        .files
        .read(&attachment.storage_key, range.clone())
        .await
        .map_err(|e| Error::Internal(format!("reading attachment {id} failed: {e}")))?;
    response = match &range {
        Some(range) => response
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_RANGE, format!("bytes {}-{}/{size}", range.start, range.end - 1))
            .header(header::CONTENT_LENGTH, range.end - range.start),
        None => response.status(StatusCode::OK).header(header::CONTENT_LENGTH, size),
    };
    Ok(response.body(Body::from_stream(bytes)).expect("valid headers"))
}

/// What a `Range` header asks of a file of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
enum RangeAsked {
    /// No single byte range we serve (several ranges, another unit, malformed): the whole file,
    /// as RFC 9110 allows.
    Whole,
    Part(std::ops::Range<u64>),
    Unsatisfiable,
}

fn byte_range(raw: &str, size: u64) -> RangeAsked {
    let Some(spec) = raw.trim().strip_prefix("bytes=") else { return RangeAsked::Whole };
    if spec.contains(',') {
        return RangeAsked::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return RangeAsked::Whole };
    let range = match (first.trim(), last.trim()) {
        ("", suffix) => match suffix.parse::<u64>() {
            Ok(0) => return RangeAsked::Unsatisfiable,
            Ok(n) => size.saturating_sub(n)..size,
            Err(_) => return RangeAsked::Whole,
        },
        (start, "") => match start.parse::<u64>() {
            Ok(start) => start..size,
            Err(_) => return RangeAsked::Whole,
        },
        (start, end) => match (start.parse::<u64>(), end.parse::<u64>()) {
            (Ok(start), Ok(end)) if start <= end => start..end.saturating_add(1).min(size),
            _ => return RangeAsked::Whole,
        },
    };
    if range.start >= size || range.is_empty() { RangeAsked::Unsatisfiable } else { RangeAsked::Part(range) }
}

/// Delete a file uploaded by mistake (admins): its bytes go, and the ticket's history says who
/// deleted it and when.
#[utoipa::path(
    delete,
    path = "/attachments/{id}",
    tag = "attachments",
    params(("id" = AttachmentId, Path, description = "Attachment id")),
    security(("oauth2" = [])),
    responses(
        (status = 204, description = "Deleted"),
        super::docs::LookupErrors,
        (status = 403, response = super::docs::Forbidden),
    )
)]
async fn delete_attachment(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<AttachmentId>,
) -> Result<impl IntoResponse> {
    allow(access::can_delete_attachments(&user), "only admins delete attachments")?;
    let deleted = state.store.delete_attachment(id, user.id).await?;
    if let Err(error) = state.files.delete(&deleted.storage_key).await {
        tracing::error!(%error, id, "the attachment is deleted but its bytes could not be removed");
    }
    Ok((StatusCode::NO_CONTENT, [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_byte_ranges_are_served_and_the_rest_is_whole_or_unsatisfiable() {
        assert_eq!(byte_range("bytes=0-9", 100), RangeAsked::Part(0..10));
        assert_eq!(byte_range("bytes=90-", 100), RangeAsked::Part(90..100));
        assert_eq!(byte_range("bytes=-10", 100), RangeAsked::Part(90..100));
        assert_eq!(byte_range("bytes=-500", 100), RangeAsked::Part(0..100));
        assert_eq!(byte_range("bytes=50-500", 100), RangeAsked::Part(50..100));
        assert_eq!(byte_range("bytes=100-", 100), RangeAsked::Unsatisfiable);
        assert_eq!(byte_range("bytes=-0", 100), RangeAsked::Unsatisfiable);
        assert_eq!(byte_range("bytes=0-0", 0), RangeAsked::Unsatisfiable);
        assert_eq!(byte_range("bytes=0-1,5-6", 100), RangeAsked::Whole);
        assert_eq!(byte_range("items=0-1", 100), RangeAsked::Whole);
        assert_eq!(byte_range("bytes=9-1", 100), RangeAsked::Whole);
        assert_eq!(byte_range("bytes=x-1", 100), RangeAsked::Whole);
    }
}
