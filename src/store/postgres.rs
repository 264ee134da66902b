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
        let (writes, reads) = super::write_and_read_connections(pool.max_connections.unwrap_or(16), 2);
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

    /// Tests the stored document of migration 0007. A walk tests it row by row (`coalesce`
    /// keeps the planner from trading the bounded walk for the GIN index); the index way reads the
    /// match set first, as an InitPlan, then fetches those rows by primary key (left to itself,
    /// the planner may misjudge a rare word and walk the whole table for it).
    fn push_text_search(sql: &mut QueryBuilder<Postgres>, text: &str, how: TextMatch) {
        let condition = match how {
            TextMatch::Walk { .. } => " AND coalesce(search @@ websearch_to_tsquery('english', ",
            TextMatch::Index => {
                " AND id = ANY(ARRAY(SELECT id FROM tickets WHERE search @@ websearch_to_tsquery('english', "
            }
        };
        sql.push(condition).push_bind(text.to_owned());
        sql.push(if matches!(how, TextMatch::Index) { ")))" } else { "), false)" });
    }
}
