//! Settings from the environment (and `.env`, loaded by `main`). Every setting is listed with its
//! default in `.env.example`. Secrets are redacted in `Debug`, so logging a `Config` is safe.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub const DEFAULT_BIND_ADDR: &str = "127.0.0.1:8000";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/ticketdesk.db";
pub const DEFAULT_ACCESS_TOKEN_TTL_SECS: u64 = 1800;
pub const DEFAULT_PUBLIC_BASE_URL: &str = "https://support.example.com";
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 30;
pub const DEFAULT_REFRESH_TOKEN_TTL_SECS: u64 = 14 * 86_400;
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECS: u64 = 30;
pub const DEFAULT_DATABASE_ACQUIRE_TIMEOUT_SECS: u64 = 5;
pub const DEFAULT_SEND_TIMEOUT_SECS: u64 = 10;
pub const DEFAULT_MAX_CONNECTIONS: usize = 1000;
pub const DEFAULT_PASSWORD_HASH_QUEUE: usize = 32;
pub const DEFAULT_WEBHOOK_TIMEOUT_SECS: u64 = 10;
pub const DEFAULT_WEBHOOK_MAX_CONCURRENT: usize = 16;
pub const DEFAULT_WEBHOOK_MAX_CONCURRENT_PER_WEBHOOK: usize = 4;
pub const DEFAULT_EMBED_STREAMS_MAX: usize = 1000;
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 64;
pub const DEFAULT_EMBED_STREAMS_PER_CLIENT: usize = 16;
pub const DEFAULT_EMBED_STREAM_MAX_SECS: u64 = 3600;
pub const DEFAULT_ATTACHMENT_STORAGE: &str = "data/attachments";
pub const DEFAULT_ATTACHMENT_MAX_BYTES: u64 = 25 * 1024 * 1024;
pub const DEFAULT_UPLOAD_TTL_SECS: u64 = 3600;
pub const DEFAULT_UPLOAD_TIMEOUT_SECS: u64 = 600;
pub const DEFAULT_UPLOADS_PENDING_PER_USER: usize = 20;
pub const DEFAULT_UPLOADS_IN_FLIGHT_PER_USER: usize = 4;
/// HS256 keys shorter than the hash output weaken it (RFC 7518 §3.2).
pub const MIN_JWT_SECRET_BYTES: usize = 32;

#[derive(Debug, Clone)]
pub struct Config {
    pub bind_addr: SocketAddr,
    pub database_url: DatabaseUrl,
    pub database_pool: PoolSettings,
    pub jwt_secret: JwtSecret,
    pub access_token_ttl: Duration,
    /// Embed links point here, without a trailing slash.
    pub public_base_url: String,
    /// Whether anyone may sign up as a customer through `POST /auth/register`.
    pub self_registration: bool,
    pub request_timeout: Duration,
    pub refresh_token_ttl: Duration,
    /// How long a stopping server waits for requests in flight before it closes them.
    pub shutdown_timeout: Duration,
    /// Reverse proxies whose `X-Forwarded-For` names the client (for login throttling).
    pub trusted_proxies: Vec<IpAddr>,
    /// Origins whose browser pages may call the API (the embed route is open to every origin).
    pub cors_allowed_origins: Vec<String>,
    /// Where `/metrics` is served, apart from the API; `None` serves it nowhere.
    pub metrics_addr: Option<SocketAddr>,
    /// Open client connections at most (live streams not counted); beyond it the oldest idle
    /// one is closed, or, with none idle, the new one is answered 503 and closed.
    pub max_connections: usize,
    /// Open connections per client address (not counting trusted proxies); more get 429.
    pub max_connections_per_client: usize,
    /// How long writing a response may make no progress (a client that stops reading) before the
    /// connection is closed.
    pub send_timeout: Duration,
    /// Password hashes that may wait for a core; beyond them, requests needing one get 503.
    pub password_hash_queue: usize,
    pub webhooks: WebhookSettings,
    /// Live embed streams open at once, at most; more are answered 503.
    pub embed_streams_max: usize,
    /// Live embed streams one client address may hold open; more are answered 429.
    pub embed_streams_per_client: usize,
    /// How long a live embed stream lasts before the server ends it (the client reconnects).
    pub embed_stream_max_lifetime: Duration,
    pub attachments: AttachmentSettings,
}

/// Where files are kept, and how much one user may send.
#[derive(Debug, Clone)]
pub struct AttachmentSettings {
    pub storage: FileStorage,
    /// The largest file accepted; a larger one is refused (413) as its bytes pass the limit.
    pub max_bytes: u64,
    /// How long an upload waits to be referenced before the sweeper removes it.
    pub upload_ttl: Duration,
    /// How long sending one file may take (other requests have `REQUEST_TIMEOUT_SECS`).
    pub upload_timeout: Duration,
    /// Uploads one user may hold that nothing references yet.
    pub pending_per_user: usize,
    /// Uploads one user may be sending at once.
    pub in_flight_per_user: usize,
    /// The malware scanner every upload passes through before it gets a token (`CLAMD_ADDR`).
    pub scanner: Option<crate::scan::Scanner>,
}

/// `ATTACHMENT_STORAGE`: a local folder, or `s3://bucket` on an S3-compatible service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileStorage {
    Local(std::path::PathBuf),
    S3(S3Settings),
}

#[derive(Clone, PartialEq, Eq)]
pub struct S3Settings {
    pub bucket: String,
    /// The service's URL (`S3_ENDPOINT`), for anything but AWS itself; `http://` is allowed.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// With it, downloads are redirected to a presigned URL valid this long, instead of
    /// streaming through the server (`S3_PRESIGNED_URL_SECS`).
    pub presigned_url_ttl: Option<Duration>,
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"[redacted]")
            .field("presigned_url_ttl", &self.presigned_url_ttl)
            .finish()
    }
}

/// How webhook deliveries are sent.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// The waits between a failed attempt and the next.
    pub retry: crate::domain::RetrySchedule,
    /// Whether webhooks may point at loopback, private and link-local addresses (tests, a
    /// receiver on the same network). Off, such URLs are refused at registration and delivery.
    pub allow_private_networks: bool,
    /// How long one attempt may take, connecting included.
    pub timeout: Duration,
    /// Attempts in flight at once, per server; 0 for a server that delivers none (others on the
    /// same database do).
    pub max_concurrent: usize,
    /// Attempts in flight at once to one webhook, per server: a stalled receiver holds no more.
    pub max_concurrent_per_webhook: usize,
}

/// The database connection pool's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Connections per server process; `None` is the backend's default (16 for PostgreSQL, 8 for
    /// SQLite). Replicas times this must stay under PostgreSQL's `max_connections`.
    pub max_connections: Option<u32>,
    /// How long a request waits for a connection before it is answered 503.
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: None,
            acquire_timeout: Duration::from_secs(DEFAULT_DATABASE_ACQUIRE_TIMEOUT_SECS),
        }
    }
}

#[derive(Clone)]
pub enum JwtSecret {
    Configured(Vec<u8>),
    /// No secret was set: a random one, so tokens do not survive a restart (and `main` warns).
    Generated(Vec<u8>),
}

impl JwtSecret {
    pub fn bytes(&self) -> &[u8] {
        match self {
            JwtSecret::Configured(bytes) | JwtSecret::Generated(bytes) => bytes,
        }
    }

    pub fn generate() -> Self {
        let mut bytes = vec![0u8; 64];
        getrandom::fill(&mut bytes).expect("the operating system's random source is unavailable");
        JwtSecret::Generated(bytes)
    }
}

impl fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtSecret::Configured(_) => f.write_str("JwtSecret::Configured([redacted])"),
            JwtSecret::Generated(_) => f.write_str("JwtSecret::Generated([redacted])"),
        }
    }
}

/// A database URL whose password never reaches a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`; one that does not parse is not shown, as
    /// there is no telling where its password is.
    pub fn redacted(&self) -> String {
        match url::Url::parse(&self.0) {
            Ok(mut url) if url.password().is_some() => {
                // Only fails for URLs that cannot have a password, and this one has one.
                let _ = url.set_password(Some("***"));
                url.into()
            }
            Ok(_) => self.0.clone(),
            Err(error) => format!("[a URL that does not parse: {error}]"),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({:?})", self.redacted())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// `LOG_FORMAT`: `text` (the default) or `json`; read before the rest, since logging starts first.
pub fn json_logs_from_env() -> Result<bool, ConfigError> {
    match std::env::var("LOG_FORMAT").ok().filter(|v| !v.is_empty()).as_deref() {
        None | Some("text") => Ok(false),
        Some("json") => Ok(true),
        Some(other) => Err(ConfigError::Invalid {
            name: "LOG_FORMAT",
            reason: format!("{other:?} must be text or json"),
        }),
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|value| !value.is_empty()))
    }

    /// Reads settings through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let invalid = |name, reason: String| ConfigError::Invalid { name, reason };

        let bind_addr =
            lookup("BIND_ADDR").unwrap_or_else(|| DEFAULT_BIND_ADDR.to_owned()).parse().map_err(|e| {
                invalid("BIND_ADDR", format!("{e} (expected host:port, e.g. {DEFAULT_BIND_ADDR})"))
            })?;

        let database_url =
            DatabaseUrl::new(lookup("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned()));

        let jwt_secret = match lookup("JWT_SECRET") {
            Some(secret) if secret.len() < MIN_JWT_SECRET_BYTES => {
                return Err(invalid(
                    "JWT_SECRET",
                    format!(
                        "it is {} bytes long; use at least {MIN_JWT_SECRET_BYTES} (e.g. `openssl rand -hex 32`)",
                        secret.len()
                    ),
                ));
            }
            Some(secret) => JwtSecret::Configured(secret.into_bytes()),
            None => JwtSecret::generate(),
        };

        // A number of seconds from 1 to `max`, or `default` when unset.
        let seconds = |name: &'static str, default: u64, max: u64| match lookup(name) {
            None => Ok(Duration::from_secs(default)),
            Some(raw) => raw
                .parse::<u64>()
                .ok()
                .filter(|secs| (1..=max).contains(secs))
                .map(Duration::from_secs)
                .ok_or_else(|| invalid(name, format!("{raw:?} is not a number of seconds from 1 to {max}"))),
        };
        let access_token_ttl = seconds("ACCESS_TOKEN_TTL_SECS", DEFAULT_ACCESS_TOKEN_TTL_SECS, 86_400)?;
        let request_timeout = seconds("REQUEST_TIMEOUT_SECS", DEFAULT_REQUEST_TIMEOUT_SECS, 3600)?;
        let refresh_token_ttl =
            seconds("REFRESH_TOKEN_TTL_SECS", DEFAULT_REFRESH_TOKEN_TTL_SECS, 90 * 86_400)?;
        let shutdown_timeout = seconds("SHUTDOWN_TIMEOUT_SECS", DEFAULT_SHUTDOWN_TIMEOUT_SECS, 3600)?;
        let send_timeout = seconds("SEND_TIMEOUT_SECS", DEFAULT_SEND_TIMEOUT_SECS, 3600)?;
        // A whole number from `min` to `max`, or `None` when unset.
        let number = |name: &'static str, min: usize, max: usize| {
            lookup(name)
                .map(|raw| {
                    raw.parse::<usize>()
                        .ok()
                        .filter(|n| (min..=max).contains(n))
                        .ok_or_else(|| invalid(name, format!("{raw:?} is not a number from {min} to {max}")))
                })
                .transpose()
        };
        let max_connections = number("DATABASE_MAX_CONNECTIONS", 1, 1000)?.map(|n| n as u32);
        let max_client_connections =
            number("MAX_CONNECTIONS", 1, 1_000_000)?.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        let password_hash_queue =
            number("PASSWORD_HASH_QUEUE", 0, 100_000)?.unwrap_or(DEFAULT_PASSWORD_HASH_QUEUE);
        let metrics_addr = lookup("METRICS_ADDR")
            .map(|raw| {
                raw.parse::<SocketAddr>().map_err(|e| {
                    invalid("METRICS_ADDR", format!("{e} (expected host:port, e.g. 127.0.0.1:9100)"))
                })
            })
            .transpose()?;
        let database_pool = PoolSettings {
            max_connections,
            acquire_timeout: seconds(
                "DATABASE_ACQUIRE_TIMEOUT_SECS",
                DEFAULT_DATABASE_ACQUIRE_TIMEOUT_SECS,
                60,
            )?,
        };

        let list = |name: &str| -> Vec<String> {
            lookup(name)
                .map(|raw| {
                    raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
                })
                .unwrap_or_default()
        };
        let trusted_proxies = list("TRUSTED_PROXIES")
            .into_iter()
            .map(|ip| {
                // `::ffff:10.0.0.2` is the IPv4 proxy 10.0.0.2, however a listener hears it.
                ip.parse::<IpAddr>()
                    .map(|ip| ip.to_canonical())
                    .map_err(|_| invalid("TRUSTED_PROXIES", format!("{ip:?} is not an IP address")))
            })
            .collect::<Result<Vec<IpAddr>, _>>()?;
        let cors_allowed_origins = list("CORS_ALLOWED_ORIGINS");
        if let Some(bad) = cors_allowed_origins.iter().find(|origin| !is_origin(origin)) {
            return Err(invalid(
                "CORS_ALLOWED_ORIGINS",
                format!("{bad:?} is not an origin like https://app.example.com (scheme and host, no path)"),
            ));
        }

        let public_base_url = lookup("PUBLIC_BASE_URL").unwrap_or_else(|| DEFAULT_PUBLIC_BASE_URL.to_owned());
        if !(public_base_url.starts_with("https://") || public_base_url.starts_with("http://")) {
            return Err(invalid(
                "PUBLIC_BASE_URL",
                format!("{public_base_url:?} must start with https:// or http://"),
            ));
        }

        let flag = |name: &'static str| match lookup(name).as_deref() {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(invalid(name, format!("{other:?} must be true or false"))),
        };
        let self_registration = flag("SELF_REGISTRATION")?;
        let webhooks = WebhookSettings {
            retry: crate::domain::RetrySchedule::parse(
                lookup("WEBHOOK_RETRY_SECS").as_deref().unwrap_or(crate::domain::RetrySchedule::DEFAULT),
            )
            .map_err(|reason| invalid("WEBHOOK_RETRY_SECS", reason))?,
            allow_private_networks: flag("WEBHOOK_ALLOW_PRIVATE_NETWORKS")?,
            timeout: seconds("WEBHOOK_TIMEOUT_SECS", DEFAULT_WEBHOOK_TIMEOUT_SECS, 300)?,
            max_concurrent: number("WEBHOOK_MAX_CONCURRENT", 0, 10_000)?
                .unwrap_or(DEFAULT_WEBHOOK_MAX_CONCURRENT),
            max_concurrent_per_webhook: number("WEBHOOK_MAX_CONCURRENT_PER_WEBHOOK", 1, 10_000)?
                .unwrap_or(DEFAULT_WEBHOOK_MAX_CONCURRENT_PER_WEBHOOK),
        };
        let embed_streams_max =
            number("EMBED_STREAMS_MAX", 0, 1_000_000)?.unwrap_or(DEFAULT_EMBED_STREAMS_MAX);
        let embed_streams_per_client =
            number("EMBED_STREAMS_PER_CLIENT", 0, 1_000_000)?.unwrap_or(DEFAULT_EMBED_STREAMS_PER_CLIENT);
        let embed_stream_max_lifetime =
            seconds("EMBED_STREAM_MAX_SECS", DEFAULT_EMBED_STREAM_MAX_SECS, 7 * 86_400)?;
        let max_connections_per_client =
            number("MAX_CONNECTIONS_PER_CLIENT", 1, 1_000_000)?.unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_CLIENT);
        // Up to S3's own limit for a presigned URL, a week; 0 (the default): no redirect.
        let presigned_url_ttl = number("S3_PRESIGNED_URL_SECS", 0, 7 * 86_400)?
            .filter(|&secs| secs > 0)
            .map(|secs| Duration::from_secs(secs as u64));
        let storage = match lookup("ATTACHMENT_STORAGE") {
            Some(url) if url.starts_with("s3://") => {
                let bucket = url.trim_start_matches("s3://").trim_end_matches('/').to_owned();
                if bucket.is_empty() || bucket.contains('/') {
                    return Err(invalid("ATTACHMENT_STORAGE", format!("{url:?} must be s3://bucket")));
                }
                let required = |name: &'static str| {
                    lookup(name)
                        .ok_or_else(|| invalid(name, "must be set when ATTACHMENT_STORAGE is s3://".into()))
                };
                FileStorage::S3(S3Settings {
                    bucket,
                    endpoint: lookup("S3_ENDPOINT"),
                    region: lookup("S3_REGION").unwrap_or_else(|| "us-east-1".to_owned()),
                    access_key_id: required("S3_ACCESS_KEY_ID")?,
                    secret_access_key: required("S3_SECRET_ACCESS_KEY")?,
                    presigned_url_ttl,
                })
            }
            _ if presigned_url_ttl.is_some() => {
                return Err(invalid(
                    "S3_PRESIGNED_URL_SECS",
                    "applies only when ATTACHMENT_STORAGE is s3://".into(),
                ));
            }
            folder => {
                FileStorage::Local(folder.unwrap_or_else(|| DEFAULT_ATTACHMENT_STORAGE.to_owned()).into())
            }
        };
        let attachments = AttachmentSettings {
            storage,
            max_bytes: number("ATTACHMENT_MAX_BYTES", 1, 5 << 30)?
                .map_or(DEFAULT_ATTACHMENT_MAX_BYTES, |bytes| bytes as u64),
            upload_ttl: seconds("UPLOAD_TTL_SECS", DEFAULT_UPLOAD_TTL_SECS, 7 * 86_400)?,
            upload_timeout: seconds("UPLOAD_TIMEOUT_SECS", DEFAULT_UPLOAD_TIMEOUT_SECS, 86_400)?,
            pending_per_user: number("UPLOADS_PENDING_PER_USER", 1, 100_000)?
                .unwrap_or(DEFAULT_UPLOADS_PENDING_PER_USER),
            in_flight_per_user: number("UPLOADS_IN_FLIGHT_PER_USER", 1, 1000)?
                .unwrap_or(DEFAULT_UPLOADS_IN_FLIGHT_PER_USER),
            scanner: match lookup("CLAMD_ADDR") {
                Some(addr)
                    if addr.rsplit_once(':').is_some_and(|(host, port)| {
                        !host.is_empty() && port.parse::<u16>().is_ok_and(|port| port > 0)
                    }) =>
                {
                    Some(crate::scan::Scanner::new(addr))
                }
                Some(addr) => return Err(invalid("CLAMD_ADDR", format!("{addr:?} must be host:port"))),
                None => None,
            },
        };

        Ok(Config {
            bind_addr,
            database_url,
            database_pool,
            jwt_secret,
            access_token_ttl,
            public_base_url: public_base_url.trim_end_matches('/').to_owned(),
            self_registration,
            request_timeout,
            refresh_token_ttl,
            shutdown_timeout,
            trusted_proxies,
            cors_allowed_origins,
            metrics_addr,
            max_connections: max_client_connections,
            max_connections_per_client,
            send_timeout,
            password_hash_queue,
            webhooks,
            embed_streams_max,
            embed_streams_per_client,
            embed_stream_max_lifetime,
            attachments,
        })
    }
}

/// `scheme://host[:port]`, nothing after: what a browser sends in `Origin`.
fn is_origin(origin: &str) -> bool {
    let Some(rest) = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://")) else {
        return false;
    };
    !rest.is_empty() && !rest.contains(['/', '?', '#', ' ', '*'])
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config_from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let config = config_from(&[]).unwrap();
        assert_eq!(config.bind_addr.to_string(), DEFAULT_BIND_ADDR);
        assert_eq!(config.database_url.expose(), DEFAULT_DATABASE_URL);
        assert_eq!(config.access_token_ttl, Duration::from_secs(1800));
        assert_eq!(config.public_base_url, DEFAULT_PUBLIC_BASE_URL);
        assert!(!config.self_registration, "self-registration is off unless asked for");
        assert_eq!(config.request_timeout, Duration::from_secs(30));
        assert_eq!(config.refresh_token_ttl, Duration::from_secs(14 * 86_400));
        assert_eq!(config.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(config.database_pool, PoolSettings::default());
        assert_eq!(config.database_pool.acquire_timeout, Duration::from_secs(5));
        assert!(config.trusted_proxies.is_empty(), "no proxy is trusted unless named");
        assert!(config.cors_allowed_origins.is_empty(), "no origin is allowed unless named");
        assert_eq!(config.metrics_addr, None, "metrics are served nowhere unless asked for");
        assert_eq!(config.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(config.send_timeout, Duration::from_secs(10));
        assert_eq!(config.password_hash_queue, DEFAULT_PASSWORD_HASH_QUEUE);
        assert!(config.attachments.scanner.is_none(), "uploads are scanned only where a scanner is named");
    }

    #[test]
    fn lists_are_comma_separated() {
        let config = config_from(&[
            ("TRUSTED_PROXIES", "127.0.0.1, ::1"),
            ("CORS_ALLOWED_ORIGINS", "https://app.example.com,http://localhost:3000"),
        ])
        .unwrap();
        assert_eq!(config.trusted_proxies.len(), 2);
        assert_eq!(config.cors_allowed_origins, ["https://app.example.com", "http://localhost:3000"]);
    }

    #[test]
    fn missing_jwt_secret_is_generated_randomly_not_constant() {
        let (a, b) = (config_from(&[]).unwrap(), config_from(&[]).unwrap());
        assert!(matches!(a.jwt_secret, JwtSecret::Generated(_)));
        assert!(a.jwt_secret.bytes().len() >= MIN_JWT_SECRET_BYTES);
        assert_ne!(a.jwt_secret.bytes(), b.jwt_secret.bytes());
    }

    #[test]
    fn short_jwt_secret_is_refused() {
        let err = config_from(&[("JWT_SECRET", "too-short")]).unwrap_err();
        assert!(err.to_string().contains("JWT_SECRET"), "{err}");
        let ok = config_from(&[("JWT_SECRET", &"x".repeat(32))]).unwrap();
        assert!(matches!(ok.jwt_secret, JwtSecret::Configured(_)));
    }

    #[test]
    fn bad_numbers_and_addresses_are_named_in_the_error() {
        for (name, value) in [
            ("ACCESS_TOKEN_TTL_SECS", "soon"),
            ("ACCESS_TOKEN_TTL_SECS", "0"),
            ("BIND_ADDR", "localhost"),
            ("PUBLIC_BASE_URL", "support.example.com"),
            ("SELF_REGISTRATION", "yes"),
            ("REQUEST_TIMEOUT_SECS", "0"),
            ("REFRESH_TOKEN_TTL_SECS", "-1"),
            ("SHUTDOWN_TIMEOUT_SECS", "forever"),
            ("DATABASE_MAX_CONNECTIONS", "0"),
            ("DATABASE_MAX_CONNECTIONS", "many"),
            ("DATABASE_ACQUIRE_TIMEOUT_SECS", "61"),
            ("TRUSTED_PROXIES", "nginx"),
            ("CORS_ALLOWED_ORIGINS", "*"),
            ("CORS_ALLOWED_ORIGINS", "https://app.example.com/path"),
            ("METRICS_ADDR", "9100"),
            ("MAX_CONNECTIONS", "0"),
            ("SEND_TIMEOUT_SECS", "0"),
            ("PASSWORD_HASH_QUEUE", "-1"),
            ("CLAMD_ADDR", "3310"),
            ("CLAMD_ADDR", "clamd:"),
            ("CLAMD_ADDR", ":3310"),
            ("S3_PRESIGNED_URL_SECS", "60"),
            ("S3_PRESIGNED_URL_SECS", "604801"),
        ] {
            let err = config_from(&[(name, value)]).unwrap_err();
            assert!(err.to_string().starts_with(name), "{err}");
        }
    }

    /// Every setting the server reads is listed in `.env.example` and in `ticketdesk --help`.
    #[test]
    fn every_setting_read_is_documented() {
        let read = std::cell::RefCell::new(std::collections::BTreeSet::new());
        Config::from_lookup(|name| {
            read.borrow_mut().insert(name.to_owned());
            None
        })
        .unwrap();
        let mut read = read.into_inner();
        read.extend(["LOG_FORMAT".to_owned(), "RUST_LOG".to_owned()]); // read before the rest
        let example = include_str!("../.env.example");
        for name in &read {
            assert!(
                example.lines().any(|line| line.starts_with(&format!("{name}="))),
                "{name} not in .env.example"
            );
            assert!(crate::cli::SERVE_SETTINGS.contains(name.as_str()), "{name} not in --help");
        }
        assert!(read.len() >= 17, "{read:?}");
    }

    #[test]
    fn public_base_url_loses_its_trailing_slash() {
        let config = config_from(&[("PUBLIC_BASE_URL", "https://help.example.org/")]).unwrap();
        assert_eq!(config.public_base_url, "https://help.example.org");
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let config = config_from(&[
            ("JWT_SECRET", "a-very-secret-signing-key-of-40-bytes!!!"),
            ("DATABASE_URL", "postgres://app:hunter2@db.internal:5432/tickets"),
        ])
        .unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("a-very-secret"), "{printed}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("postgres://app:***@db.internal:5432/tickets"), "{printed}");

        let malformed = DatabaseUrl::new("postgres://app:hunter2@db.internal:port/tickets").redacted();
        assert!(!malformed.contains("hunter2") && malformed.contains("does not parse"), "{malformed}");
        let no_password = "sqlite://data/ticketdesk.db";
        assert_eq!(DatabaseUrl::new(no_password).redacted(), no_password);
    }
}
