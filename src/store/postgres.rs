use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{Postgres, QueryBuilder};
use tokio::sync::broadcast;

use super::Change;
use super::sql::{Dialect, SqlStore, TextMatch};
use crate::config::PoolSettings;
use crate::store::Result;

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
            .map_err(|e| crate::store::StoreError::Internal(format!("migrating PostgreSQL failed: {e}")))?;
        let url = url.to_owned();
        Ok(Self::new(pool, reads).relaying(move |changes| relay_notifications(url, changes)))
    }
}

/// The channel migration 0009's trigger notifies on, with the changed ticket's id.
const TICKETS_CHANNEL: &str = "ticketdesk_tickets";

/// Listens (on a connection of its own) to what every server's commits announce and passes it
/// on to this server's listeners. When the connection is lost, notifications sent meanwhile are
/// lost with it: once listening again, it announces `Change::Missed` so listeners read afresh.
async fn relay_notifications(url: String, changes: broadcast::Sender<Change>) {
    let mut retry = Duration::from_millis(100);
    loop {
        match listen(&url).await {
            Ok(mut listener) => {
                retry = Duration::from_millis(100);
                let _ = changes.send(Change::Missed);
                loop {
                    match listener.try_recv().await {
                        Ok(Some(notification)) => {
                            if let Ok(ticket) = notification.payload().parse() {
                                let _ = changes.send(Change::Ticket(ticket));
                            }
                        }
                        // Reconnected (sqlx listens again by itself): some may have been missed.
                        Ok(None) => {
                            let _ = changes.send(Change::Missed);
                        }
                        Err(error) => {
                            tracing::warn!(%error, "lost the database's change notifications; listening again");
                            break;
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot listen to the database's change notifications yet"),
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(Duration::from_secs(2));
    }
}

async fn listen(url: &str) -> sqlx::Result<PgListener> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(TICKETS_CHANNEL).await?;
    Ok(listener)
}

impl Dialect for Postgres {
    const BEGIN_WRITE: &'static str = "BEGIN";
    const LOCK_ROW: &'static str = " FOR UPDATE";
    const SKIP_LOCKED: &'static str = " FOR UPDATE OF d SKIP LOCKED";
    // Migration 0009's trigger NOTIFYs on commit; `relay_notifications` passes it on.
    const ANNOUNCES_TICKET_CHANGES: bool = true;

    fn migrator() -> &'static Migrator {
        &MIGRATOR
    }

    /// Tests the ticket's own document and its chunks (migrations 0007 and 0011). A walk tests
    /// them row by row (`coalesce` keeps the planner from trading the bounded walk for the GIN
    /// indexes); the index way reads the match set first, as an InitPlan, then fetches those rows
    /// by primary key (left to itself, the planner may misjudge a rare word and walk the whole
    /// table for it).
    fn push_text_search(sql: &mut QueryBuilder<Postgres>, text: &str, how: TextMatch) {
        let query = "websearch_to_tsquery('english', ";
        match how {
            TextMatch::Walk { .. } => {
                sql.push(format_args!(" AND coalesce(search @@ {query}")).push_bind(text.to_owned());
                sql.push(") OR EXISTS (SELECT 1 FROM ticket_search_chunks c WHERE c.ticket_id = tickets.id");
                sql.push(format_args!(" AND c.document @@ {query}"))
                    .push_bind(text.to_owned())
                    .push(")), false)");
            }
            TextMatch::Index => {
                sql.push(format_args!(" AND id = ANY(ARRAY(SELECT id FROM tickets WHERE search @@ {query}"));
                sql.push_bind(text.to_owned());
                sql.push(format_args!(
                    ") UNION SELECT ticket_id FROM ticket_search_chunks WHERE document @@ {query}"
                ));
                sql.push_bind(text.to_owned()).push(")))");
            }
        }
    }
}
