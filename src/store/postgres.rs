use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::sql::impl_store;
use crate::error::Result;

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects and migrates. Replicas starting together are safe: sqlx holds a Postgres advisory
    /// lock while it migrates, so exactly one applies each migration and the others wait.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            // Fail fast (503) when the database is gone, instead of holding requests for 30 s.
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| crate::error::Error::Internal(format!("migrating PostgreSQL failed: {e}")))?;
        Ok(Self { pool })
    }
}

impl_store!(PgStore, sqlx::Postgres, begin_write: "BEGIN", lock_row: " FOR UPDATE");
