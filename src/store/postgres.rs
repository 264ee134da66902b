use std::str::FromStr;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Postgres, QueryBuilder};

use super::sql::{Dialect, SqlStore, TextMatch};
use crate::config::PoolSettings;
use crate::error::Result;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

impl SqlStore<Postgres> {
    /// Connects and migrates. Replicas starting together are safe: sqlx holds a Postgres advisory
    /// lock while it migrates, so exactly one applies each migration and the others wait.
    pub async fn connect(url: &str, pool: &PoolSettings) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)?;
        let (writes, reads) = super::write_and_read_connections(pool.max_connections.unwrap_or(16));
        let pool = PgPoolOptions::new()
            .max_connections(writes)
            // Fail fast (503) when the database is gone, instead of sqlx's default 30 s.
            .acquire_timeout(pool.acquire_timeout)
            // A ping before each use would double the round trips; `begin_write` notices a dead
            // connection by its failing BEGIN instead.
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| crate::error::Error::Internal(format!("migrating PostgreSQL failed: {e}")))?;
        Ok(Self::new(pool, reads))
    }
}

impl Dialect for Postgres {
    const BEGIN_WRITE: &'static str = "BEGIN";
    const LOCK_ROW: &'static str = " FOR UPDATE";

    fn migrator() -> &'static Migrator {
        &MIGRATOR
    }

    /// Tests the stored document of migration 0007, row by row or through its GIN index; the
    /// planner picks which from the statement (a walk is bounded by its span).
    fn push_text_search(sql: &mut QueryBuilder<Postgres>, text: &str, _how: TextMatch) {
        sql.push(" AND search @@ websearch_to_tsquery('english', ").push_bind(text.to_owned()).push(")");
    }
}
