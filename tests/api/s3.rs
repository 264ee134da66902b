//! An S3-compatible server (s3s-fs, files in a temporary folder) started inside the test, so the
//! attachment scenarios run on S3 storage with no service outside the process.

use hyper_util::rt::TokioIo;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

pub const ACCESS_KEY: &str = "ticketdesk-test";
pub const SECRET_KEY: &str = "ticketdesk-test-secret-key";

pub struct S3Server {
    pub endpoint: String,
    pub bucket: String,
    folder: std::path::PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl S3Server {
    /// Serves an empty bucket on a free port of 127.0.0.1, until dropped.
    pub async fn start() -> Self {
        let folder = std::env::temp_dir()
            .join("ticketdesk-tests")
            .join(format!("s3-{}", uuid::Uuid::new_v4().simple()));
        let bucket = "attachments".to_owned();
        std::fs::create_dir_all(folder.join(&bucket)).expect("creating the bucket's folder");
        let mut service = S3ServiceBuilder::new(s3s_fs::FileSystem::new(&folder).expect("an s3s-fs root"));
        service.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = service.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let service = service.clone();
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        Self { endpoint, bucket, folder, task }
    }

    /// Where the bucket's objects are kept.
    pub fn bucket_folder(&self) -> std::path::PathBuf {
        self.folder.join(&self.bucket)
    }

    /// The settings that point the server's attachments here.
    pub fn settings(&self) -> Vec<(String, String)> {
        [
            ("ATTACHMENT_STORAGE", format!("s3://{}", self.bucket)),
            ("S3_ENDPOINT", self.endpoint.clone()),
            ("S3_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("S3_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}
