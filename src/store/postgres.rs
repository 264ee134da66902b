use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{Postgres, QueryBuilder};
use tokio::sync::broadcast;

use super::Change;
use super::sql::{Dialect, SqlStore, TextMatch, UpdatePosition};
use super::watches::{self, Watches};
use crate::config::PoolSettings;
use crate::domain::TicketId;
use crate::store::Result;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

impl SqlStore<Postgres> {
    /// Connects and migrates. Replicas starting together are safe: sqlx holds a Postgres advisory
    /// lock while it migrates, so exactly one applies each migration and the others wait.
    pub async fn connect(url: &str, pool: &PoolSettings) -> Result<Self> {
        // No JIT: every statement here is short, and a cost estimate inflated by a filter the
        // planner cannot judge (a search's posting reads: 3-20 ms of compiling for 2 ms of work)
        // is enough to trigger it.
        let options = PgConnectOptions::from_str(url)?.options([("jit", "off")]);
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
        Ok(Self::new(pool, reads).relaying(move |pool, changes, watches| relay(url, pool, changes, watches)))
    }
}

/// The channel migration 0016's trigger notifies on, with the changed ticket's id.
const TICKETS_CHANNEL: &str = "ticketdesk_tickets";

/// Relays what every server's commits announce to this server's streams, and keeps this
/// server's watches recorded.
async fn relay(url: String, pool: PgPool, changes: broadcast::Sender<Change>, watches: Arc<Watches>) {
    tokio::join!(relay_notifications(url, changes, watches.clone()), keep_watches(pool, watches));
}

/// Listens (on a connection of its own) to the announced changes of watched tickets and wakes
/// this server's streams of each. When the connection is lost, notifications sent meanwhile are
/// lost with it: once listening again, every stream reads afresh, and the delivery worker is told
/// (`Change::Missed`).
async fn relay_notifications(url: String, changes: broadcast::Sender<Change>, watches: Arc<Watches>) {
    let missed = || {
        watches.all_changed();
        let _ = changes.send(Change::Missed);
    };
    let mut retry = Duration::from_millis(100);
    loop {
        match listen(&url).await {
            Ok(mut listener) => {
                retry = Duration::from_millis(100);
                missed();
                loop {
                    match listener.try_recv().await {
                        Ok(Some(notification)) => {
                            if let Ok(ticket) = notification.payload().parse() {
                                watches.changed(ticket);
                            }
                        }
                        // Reconnected (sqlx listens again by itself): some may have been missed.
                        Ok(None) => missed(),
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

/// Where a watch is recorded again (by another server, or renewed), it lasts until the later of
/// the two expiries.
macro_rules! keep_the_later_expiry {
    () => {
        " ON CONFLICT (ticket_id) DO UPDATE SET expires_at = greatest(embed_watches.expires_at, EXCLUDED.expires_at)"
    };
}

/// Renews this server's recorded watches every [`watches::RENEW_EVERY`] and drops every server's
/// lapsed ones.
async fn keep_watches(pool: PgPool, watches: Arc<Watches>) {
    let mut ticks = tokio::time::interval(watches::RENEW_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(error) = renew_watches(&pool, &watches, Utc::now()).await {
            tracing::warn!(%error, "could not renew the live streams' watches");
        }
    }
}

/// Renews the watches of the tickets this server's streams follow and deletes every lapsed one.
/// A watch found lapsed (this server was stalled past its lifetime) is recorded again, and its
/// streams read afresh: a change may have gone unannounced meanwhile.
pub async fn renew_watches(pool: &PgPool, watches: &Watches, now: DateTime<Utc>) -> sqlx::Result<()> {
    let followed = watches.recorded();
    if !followed.is_empty() {
        let lapsed: Vec<Option<TicketId>> = sqlx::query_scalar(concat!(
            "INSERT INTO embed_watches (ticket_id, expires_at) SELECT unnest($1::bigint[]), $2",
            keep_the_later_expiry!(),
            " RETURNING CASE WHEN xmax = 0 THEN ticket_id END"
        ))
        .bind(&followed)
        .bind(now + watches::LIFETIME)
        .fetch_all(pool)
        .await?;
        for ticket in lapsed.into_iter().flatten() {
            watches.changed(ticket);
        }
    }
    sqlx::query("DELETE FROM embed_watches WHERE expires_at < $1").bind(now).execute(pool).await?;
    Ok(())
}

impl Dialect for Postgres {
    const BEGIN_WRITE: &'static str = "BEGIN";
    const LOCK_ROW: &'static str = " FOR UPDATE";
    const SKIP_LOCKED: &'static str = " FOR UPDATE OF d SKIP LOCKED";
    const COMMIT_WITHOUT_FLUSH: Option<&'static str> = Some("SET LOCAL synchronous_commit = off");
    const CLAIM_IN_INDEX_ORDER: Option<&'static str> = Some("SET LOCAL enable_bitmapscan = off");
    // Migration 0016's trigger NOTIFYs changes of tickets with a watch; `relay_notifications`
    // passes them on. The watch takes the ticket's row in share mode first: a write in progress
    // (which may have missed the watch) commits before it, one after it sees the watch. Either
    // way the stream's read after this sees the change or is told of it.
    const RECORD_WATCH: Option<&'static str> = Some(concat!(
        "WITH ticket AS (SELECT id FROM tickets WHERE id = $1 FOR SHARE)
         INSERT INTO embed_watches (ticket_id, expires_at) SELECT id, $2 FROM ticket",
        keep_the_later_expiry!()
    ));

    fn migrator() -> &'static Migrator {
        &MIGRATOR
    }

    /// Tests the ticket's own document and its chunks (migrations 0007 and 0011). A walk tests
    /// them row by row (`coalesce` keeps the planner from trading the bounded walk for the GIN
    /// indexes); the index way reads the match set first, as an InitPlan, then fetches those rows
    /// by primary key (left to itself, the planner may misjudge a rare word and walk the whole
    /// table for it).
    fn push_text_search(sql: &mut QueryBuilder<Postgres>, text: &str, how: &TextMatch) {
        let query = "websearch_to_tsquery('english', ";
        match how {
            TextMatch::Walk { .. } | TextMatch::Found { .. } | TextMatch::Among { .. } => {
                if let TextMatch::Found { ids } = how {
                    sql.push(" AND id = ANY(").push_bind(ids.clone()).push(")");
                }
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

    /// The ticket's own document through `ticket_words` (migration 0017): the postings of the
    /// query's first word in id order, each kept if the ticket has all the query's words (the
    /// phrase is tested by [`TextMatch::Found`]); and the chunks' matches, which are few.
    fn push_matches_in_id_order(
        sql: &mut QueryBuilder<Postgres>,
        text: &str,
        after: TicketId,
        descending: bool,
        limit: i64,
    ) -> bool {
        if !postings_can_answer(text) {
            return false;
        }
        let (beyond, order) = if descending { ("<", "DESC") } else { (">", "ASC") };
        sql.push("SELECT id FROM ((SELECT w.ticket_id AS id");
        push_postings_of_all_words(sql, text);
        sql.push(format_args!(" AND w.ticket_id {beyond} ")).push_bind(after);
        sql.push(format_args!(" ORDER BY w.ticket_id {order} LIMIT ")).push_bind(limit);
        sql.push(") UNION SELECT ticket_id FROM ticket_search_chunks")
            .push(" WHERE document @@ websearch_to_tsquery('english', ")
            .push_bind(text.to_owned())
            .push(format_args!(") AND ticket_id {beyond} "))
            .push_bind(after)
            .push(format_args!(") AS matches ORDER BY id {order} LIMIT "))
            .push_bind(limit);
        true
    }

    /// The same postings (migration 0021) in the order of the hour each ticket was last updated,
    /// then id.
    fn push_matches_in_update_order(
        sql: &mut QueryBuilder<Postgres>,
        text: &str,
        after: UpdatePosition,
        descending: bool,
        limit: i64,
    ) -> bool {
        if !postings_can_answer(text) {
            return false;
        }
        let (beyond, order) = if descending { ("<", "DESC") } else { (">", "ASC") };
        sql.push("SELECT w.ticket_id AS id, w.updated_hour::bigint AS hour");
        push_postings_of_all_words(sql, text);
        sql.push(format_args!(" AND (w.updated_hour, w.ticket_id) {beyond} ("))
            .push_bind(after.hour)
            .push(", ")
            .push_bind(after.id)
            .push(")");
        sql.push(format_args!(" ORDER BY w.updated_hour {order}, w.ticket_id {order} LIMIT "))
            .push_bind(limit);
        true
    }

    /// `OFFSET 0` keeps the subquery from being merged into the statement.
    fn push_tickets_among(sql: &mut QueryBuilder<Postgres>, ids: &[TicketId]) {
        sql.push("(SELECT * FROM tickets WHERE id ");
        Self::push_one_of(sql, ids);
        sql.push(" OFFSET 0) AS tickets");
    }

    fn push_one_of(sql: &mut QueryBuilder<Postgres>, ids: &[i64]) {
        sql.push("= ANY(").push_bind(ids.to_vec()).push(")");
    }

    fn push_chunk_matches(sql: &mut QueryBuilder<Postgres>, text: &str) {
        sql.push("SELECT DISTINCT ticket_id FROM ticket_search_chunks WHERE document @@ websearch_to_tsquery('english', ")
            .push_bind(text.to_owned())
            .push(")");
    }
}

/// Whether the postings of a text's words hold its matches: not where `or` and `-word`, web-search
/// operators, make matches that need not hold every word.
fn postings_can_answer(text: &str) -> bool {
    let operator = |word: &str| {
        let word = word.trim_start_matches('"');
        word.eq_ignore_ascii_case("or") || word.starts_with('-')
    };
    !text.split_whitespace().any(operator)
}

/// ` FROM ticket_words w WHERE` the postings of `text`'s first word whose tickets have all its
/// words. The words are counted per posting, never tested as a join (the planner would hash all
/// of `ticket_words` for that).
fn push_postings_of_all_words(sql: &mut QueryBuilder<Postgres>, text: &str) {
    let words = "tsvector_to_array(to_tsvector('english', ";
    sql.push(format_args!(" FROM ticket_words w WHERE w.word = ({words}"))
        .push_bind(text.to_owned())
        .push(")))[1]")
        // One word (the common case) needs no count: PostgreSQL stops at the first operand.
        .push(format_args!(" AND (cardinality({words}"))
        .push_bind(text.to_owned())
        .push("))) = 1")
        .push(" OR (SELECT count(*) FROM ticket_words x WHERE x.ticket_id = w.ticket_id AND x.word = ANY (")
        .push(words)
        .push_bind(text.to_owned())
        .push(format_args!(")))) = cardinality({words}"))
        .push_bind(text.to_owned())
        .push("))))");
}
