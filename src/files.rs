//! Where attachments' bytes live: one `object_store` API over a local folder (the default, beside
//! the SQLite file) or any S3-compatible service (for several replicas). Keys are
//! `attachments/<random uuid>`, never derived from anything a user sent.

use std::sync::Arc;

use axum::body::Bytes;
use futures_util::{Stream, StreamExt};
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{
    Attribute, GetOptions, GetRange, GetResultPayload, ObjectStore, PutMultipartOptions, WriteMultipart,
};
use sha2::{Digest, Sha256};

use crate::config::FileStorage;
use crate::domain::UserId;
use crate::domain::attachment::{SNIFF_BYTES, content_disposition, sniff_content_type};
use crate::store::Store;

/// Parts of this size go to storage as they fill (S3's smallest part is 5 MiB), at most two in
/// flight: what one upload holds in memory, whatever its size.
const PART_BYTES: usize = 5 * 1024 * 1024;
const PARTS_IN_FLIGHT: usize = 2;

#[derive(Clone)]
pub struct Files {
    store: Arc<dyn ObjectStore>,
    /// Set for S3 storage: objects carry their type and disposition, and downloads may be
    /// redirected to a presigned URL.
    s3: Option<S3Files>,
}

#[derive(Clone)]
struct S3Files {
    bucket: Arc<AmazonS3>,
    /// How long a download's presigned URL lasts; `None`: downloads stream through the server.
    presigned_url_ttl: Option<std::time::Duration>,
}

/// What writing a file found.
#[derive(Debug)]
pub struct Written {
    pub size: u64,
    pub sha256: String,
    /// As its first bytes tell it.
    pub content_type: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the file is larger than {0} bytes")]
    TooLarge(u64),
    /// The client's body broke off or was malformed.
    #[error("the upload broke off: {0}")]
    Body(String),
    #[error("storage: {0}")]
    Storage(#[from] object_store::Error),
    #[error(transparent)]
    Scan(#[from] crate::scan::ScanError),
}

impl Files {
    /// Opens the storage `ATTACHMENT_STORAGE` names, creating a local folder if need be.
    pub fn open(storage: &FileStorage) -> Result<Self, String> {
        match storage {
            FileStorage::Local(folder) => {
                std::fs::create_dir_all(folder)
                    .map_err(|e| format!("cannot create the attachment folder {}: {e}", folder.display()))?;
                let local = object_store::local::LocalFileSystem::new_with_prefix(folder)
                    .map_err(|e| format!("cannot use the attachment folder {}: {e}", folder.display()))?;
                Ok(Self { store: Arc::new(local), s3: None })
            }
            FileStorage::S3(s3) => {
                let mut builder = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(&s3.bucket)
                    .with_region(&s3.region)
                    .with_access_key_id(&s3.access_key_id)
                    .with_secret_access_key(&s3.secret_access_key);
                if let Some(endpoint) = &s3.endpoint {
                    builder =
                        builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
                }
                let bucket = Arc::new(builder.build().map_err(|e| format!("cannot use S3 storage: {e}"))?);
                let presigned_url_ttl = s3.presigned_url_ttl;
                Ok(Self { store: bucket.clone(), s3: Some(S3Files { bucket, presigned_url_ttl }) })
            }
        }
    }

    /// A key for a new file.
    pub fn new_key() -> String {
        format!("attachments/{}", uuid::Uuid::new_v4().simple())
    }

    /// Streams `body` into the file at `key`, hashing and counting as it goes, and into `scan` if
    /// there is one. Past `max_bytes`, or if the body or the scan breaks off, nothing is left
    /// behind. On S3 the object keeps its type and `filename` for downloads straight from there.
    pub async fn write<E: std::fmt::Display>(
        &self,
        key: &str,
        mut body: impl Stream<Item = Result<Bytes, E>> + Unpin,
        max_bytes: u64,
        filename: &str,
        mut scan: Option<&mut crate::scan::Scan>,
    ) -> Result<Written, WriteError> {
        // The first bytes tell the type, which S3 is given when the upload starts.
        let mut first = Vec::new();
        while first.iter().map(Bytes::len).sum::<usize>() < SNIFF_BYTES {
            match body.next().await {
                None => break,
                Some(Err(error)) => return Err(WriteError::Body(error.to_string())),
                Some(Ok(chunk)) => first.push(chunk),
            }
        }
        let head: Vec<u8> = first.iter().flat_map(|chunk| chunk.iter().copied()).take(SNIFF_BYTES).collect();
        let content_type = sniff_content_type(&head);
        let mut options = PutMultipartOptions::default();
        if self.s3.is_some() {
            options.attributes.insert(Attribute::ContentType, content_type.into());
            options.attributes.insert(Attribute::ContentDisposition, content_disposition(filename).into());
        }
        let mut body = futures_util::stream::iter(first.into_iter().map(Ok)).chain(body);

        let upload = self.store.put_multipart_opts(&Path::from(key), options).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let (mut size, mut hash) = (0u64, Sha256::new());
        let failure = loop {
            let chunk = match body.next().await {
                None => break None,
                Some(Err(error)) => break Some(WriteError::Body(error.to_string())),
                Some(Ok(chunk)) => chunk,
            };
            size += chunk.len() as u64;
            if size > max_bytes {
                break Some(WriteError::TooLarge(max_bytes));
            }
            hash.update(&chunk);
            if let Some(scan) = scan.as_deref_mut()
                && let Err(error) = scan.feed(&chunk).await
            {
                break Some(error.into());
            }
            if let Err(error) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                break Some(error.into());
            }
            writer.put(chunk);
        };
        if let Some(failure) = failure {
            if let Err(error) = writer.abort().await {
                tracing::warn!(%error, key, "aborting an upload failed; the sweeper removes its row's bytes");
            }
            return Err(failure);
        }
        writer.finish().await?;
        let sha256 = hash.finalize().iter().map(|byte| format!("{byte:02x}")).collect();
        Ok(Written { size, sha256, content_type })
    }

    /// Where a client may fetch `key` straight from storage for a while, if downloads are
    /// redirected there (S3 with `S3_PRESIGNED_URL_SECS`).
    pub async fn presigned_url(&self, key: &str) -> Result<Option<String>, object_store::Error> {
        let Some(S3Files { bucket, presigned_url_ttl: Some(ttl) }) = &self.s3 else { return Ok(None) };
        let url = bucket.signed_url(reqwest::Method::GET, &Path::from(key), *ttl).await?;
        Ok(Some(url.into()))
    }

    /// The bytes of `key` in `range` (all of them for `None`), as they come from storage.
    pub async fn read(
        &self,
        key: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<
        futures_util::stream::BoxStream<'static, Result<Bytes, object_store::Error>>,
        object_store::Error,
    > {
        let options = GetOptions { range: range.map(GetRange::Bounded), ..GetOptions::default() };
        let found = self.store.get_opts(&Path::from(key), options).await?;
        Ok(match found.payload {
            GetResultPayload::File(file, _) => file_chunks(file, found.range).boxed(),
            GetResultPayload::Stream(stream) => stream,
        })
    }

    /// Removes the file at `key`; one already gone is no error.
    pub async fn delete(&self, key: &str) -> Result<(), object_store::Error> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(error),
        }
    }
}

/// A local file's `range`, read off the async threads in large chunks: object_store's own stream
/// reads 8 KiB per thread hop, which held downloads to a fifth of this speed.
fn file_chunks(
    file: std::fs::File,
    range: std::ops::Range<u64>,
) -> impl Stream<Item = Result<Bytes, object_store::Error>> + Send + 'static {
    const READ_BYTES: u64 = 256 * 1024;
    let failed = |error: std::io::Error| object_store::Error::Generic {
        store: "LocalFileSystem",
        source: Box::new(error),
    };
    futures_util::stream::try_unfold((file, range), move |(mut file, range)| async move {
        if range.is_empty() {
            return Ok(None);
        }
        let read = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Seek, SeekFrom};
            let mut chunk = vec![0; (range.end - range.start).min(READ_BYTES) as usize];
            file.seek(SeekFrom::Start(range.start))?;
            file.read_exact(&mut chunk)?;
            let next = range.start + chunk.len() as u64..range.end;
            Ok((Bytes::from(chunk), (file, next)))
        })
        .await
        .map_err(|error| failed(std::io::Error::other(error)))?
        .map_err(failed)?;
        Ok(Some(read))
    })
}

/// Uploads in flight per user, against a cap: one user cannot hold every connection busy
/// sending files.
#[derive(Clone)]
pub struct UploadSlots {
    per_user: usize,
    taken: Arc<std::sync::Mutex<std::collections::HashMap<UserId, usize>>>,
}

/// One upload's slot, given back when it is dropped.
pub struct UploadSlot {
    slots: UploadSlots,
    user: UserId,
}

impl UploadSlots {
    pub fn new(per_user: usize) -> Self {
        Self { per_user, taken: Arc::default() }
    }

    /// A slot for `user`, or `None` if they are sending as many uploads as one may.
    pub fn take(&self, user: UserId) -> Option<UploadSlot> {
        let mut taken = self.taken.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = taken.entry(user).or_default();
        if *count >= self.per_user {
            return None;
        }
        *count += 1;
        Some(UploadSlot { slots: self.clone(), user })
    }
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        let mut taken = self.slots.taken.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = taken.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                taken.remove(&self.user);
            }
        }
    }
}

/// How many expired uploads one sweep claims at a time, and how long it holds them.
const SWEEP_BATCH: u32 = 100;
const SWEEP_LEASE: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// Removes the uploads still unreferenced after their expiry, as of `now`: claims a batch (so
/// sweepers on other replicas take others), deletes their bytes, then their rows. A sweeper that
/// dies midway leaves its claims to be taken again when their lease ends. Returns how many went.
pub async fn sweep(
    store: &dyn Store,
    files: &Files,
    now: chrono::DateTime<chrono::Utc>,
) -> crate::store::Result<usize> {
    let mut removed = 0;
    loop {
        let claimed = store.expired_uploads(now, now + SWEEP_LEASE, SWEEP_BATCH).await?;
        if claimed.is_empty() {
            return Ok(removed);
        }
        let mut gone = Vec::with_capacity(claimed.len());
        for (id, key) in claimed {
            match files.delete(&key).await {
                Ok(()) => gone.push(id),
                Err(error) => {
                    tracing::warn!(%error, id, "removing an expired upload failed; a later sweep retries")
                }
            }
        }
        store.forget_uploads(&gone).await?;
        removed += gone.len();
        if gone.is_empty() {
            return Ok(removed);
        }
    }
}

/// Sweeps every `every` until `shutdown`.
pub fn start_sweeper(
    store: Arc<dyn Store>,
    files: Files,
    every: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    crate::background::every(every, shutdown, move || {
        let (store, files) = (store.clone(), files.clone());
        async move {
            match sweep(store.as_ref(), &files, chrono::Utc::now()).await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "removed expired uploads"),
                Err(error) => {
                    tracing::warn!(%error, "sweeping expired uploads failed; the next sweep retries")
                }
            }
        }
    })
}
