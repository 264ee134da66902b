use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite};

use super::sql::{Dialect, SqlStore, TextMatch, UpdatePosition};
use crate::config::PoolSettings;
use crate::domain::TicketId;
use crate::store::{Result, StoreError};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

impl SqlStore<Sqlite> {
    /// Opens (creating it and its folder if need be) and migrates the database file.
    pub async fn connect(url: &str, pool: &PoolSettings) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .foreign_keys(true)
            // WAL lets readers run beside the one writer; NORMAL is durable in WAL mode except
            // for the last transactions before a power loss (not a process crash).
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        if let Some(folder) = options.get_filename().parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder).map_err(|e| {
                StoreError::Internal(format!("cannot create the database folder {}: {e}", folder.display()))
            })?;
        }
        // Processes starting together on one new file can meet SQLite's deadlock avoidance: a new
        // connection switching the file to WAL holds a shared lock and needs an exclusive one
        // while another process holds the write lock, and SQLite answers SQLITE_BUSY at once, not
        // after busy_timeout. Its remedy is to back off and try again; nothing was written.
        // SQLite writes one transaction at a time whatever the connections: a quarter for writes.
        let (writes, reads) = super::write_and_read_connections(pool.max_connections.unwrap_or(8), 4);
        let mut attempt = 1;
        loop {
            match open_and_migrate(options.clone(), writes, pool).await {
                Ok(pool) => return Ok(Self::new(pool, reads)),
                Err(error) if is_busy(&error) && attempt < 20 => {
                    tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
                    attempt += 1;
                }
                Err(sqlx::migrate::MigrateError::Execute(error)) => return Err(error.into()),
                Err(error) => return Err(StoreError::Internal(format!("migrating SQLite failed: {error}"))),
            }
        }
    }
}

/// Processes starting together on one new file must not both apply a migration: sqlx checks
/// what is applied outside each migration's transaction, and SQLite has no advisory lock. So the
/// whole run happens inside one `BEGIN IMMEDIATE` transaction (sqlx nests the migrator's own as
/// savepoints): the others wait for the write lock (busy_timeout), then find nothing left to do.
async fn open_and_migrate(
    options: SqliteConnectOptions,
    connections: u32,
    settings: &PoolSettings,
) -> Result<SqlitePool, sqlx::migrate::MigrateError> {
    let pool = SqlitePoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(settings.acquire_timeout)
        // As on PostgreSQL (see there): no ping before each use.
        .test_before_acquire(false)
        .connect_with(options)
        .await?;
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    refuse_usernames_differing_only_in_case(&mut tx).await?;
    MIGRATOR.run(&mut *tx).await?;
    tx.commit().await?;
    Ok(pool)
}

/// What migration 0004 does on Postgres, where it can: before usernames become unique
/// regardless of case, refuse to migrate a database holding names that differ only in case, and
/// name them, so an operator knows which accounts to rename.
async fn refuse_usernames_differing_only_in_case(
    tx: &mut sqlx::Transaction<'static, Sqlite>,
) -> Result<(), sqlx::migrate::MigrateError> {
    // Only while 0004 is pending on an existing database (a new one has no _sqlx_migrations yet).
    let migrated_before: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
    )
    .fetch_one(&mut **tx)
    .await?;
    if !migrated_before {
        return Ok(());
    }
    let pending: bool =
        sqlx::query_scalar("SELECT NOT EXISTS (SELECT 1 FROM _sqlx_migrations WHERE version = 4)")
            .fetch_one(&mut **tx)
            .await?;
    if !pending {
        return Ok(());
    }
    let clashing: Vec<(String, i64)> = sqlx::query_as(
        "SELECT username, id FROM users WHERE lower(username) IN
         (SELECT lower(username) FROM users GROUP BY lower(username) HAVING count(*) > 1)
         ORDER BY lower(username), username",
    )
    .fetch_all(&mut **tx)
    .await?;
    if clashing.is_empty() {
        return Ok(());
    }
    let mut groups: Vec<Vec<String>> = Vec::new();
    for (i, (name, id)) in clashing.iter().enumerate() {
        let same_as_previous = i > 0 && clashing[i - 1].0.eq_ignore_ascii_case(name);
        if !same_as_previous {
            groups.push(Vec::new());
        }
        groups.last_mut().expect("a group was pushed").push(format!("{name} (id {id})"));
    }
    let names: Vec<String> = groups.iter().map(|group| group.join(", ")).collect();
    Err(sqlx::migrate::MigrateError::Source(
        format!(
            "usernames must be unique regardless of case, but these differ only in case: {}; rename all \
             but one of each (UPDATE users SET username = ... WHERE id = ...), then start the server again",
            names.join("; ")
        )
        .into(),
    ))
}

fn is_busy(error: &sqlx::migrate::MigrateError) -> bool {
    match error {
        sqlx::migrate::MigrateError::Execute(sqlx::Error::Database(db))
        | sqlx::migrate::MigrateError::ExecuteMigration(sqlx::Error::Database(db), _) => {
            db.code().as_deref() == Some("5")
        }
        _ => false,
    }
}

impl Dialect for Sqlite {
    // BEGIN IMMEDIATE takes the write lock up front: a deferred transaction that reads and then
    // writes can fail with SQLITE_BUSY when another writer got there first, whatever
    // busy_timeout.
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    // One writer at a time (BEGIN IMMEDIATE) already keeps the row as it was read.
    const LOCK_ROW: &'static str = "";
    // The write lock serializes claims.
    const SKIP_LOCKED: &'static str = "";
    // WAL with synchronous=NORMAL does not flush on commit anyway.
    const COMMIT_WITHOUT_FLUSH: Option<&'static str> = None;
    // SQLite walks the due index in its order by itself.
    const CLAIM_IN_INDEX_ORDER: Option<&'static str> = None;
    // One server: the store wakes its streams itself after each commit.
    const RECORD_WATCH: Option<&'static str> = None;

    fn migrator() -> &'static Migrator {
        &MIGRATOR
    }

    /// FTS5 with the porter stemmer (like Postgres' English configuration): the ticket's own row
    /// (migration 0007) or one of its chunks (migration 0011) must match. The match lists are
    /// read first and the tickets fetched by id; a walk reads only the matches among the ids it
    /// walks (FTS5 seeks to a rowid range, which for the ticket's own row is its id).
    fn push_text_search(sql: &mut QueryBuilder<Sqlite>, text: &str, how: &TextMatch) {
        let terms = fts5_terms(text);
        let walked = match how {
            TextMatch::Walk { ids } => Some(*ids),
            // Found in id order by the same match: the span of them is enough.
            TextMatch::Found { ids } => {
                ids.iter().min().zip(ids.iter().max()).map(|(&low, &high)| (low, high))
            }
            // Matched already, by an index of the same text (migration 0021) or by the chunks'.
            TextMatch::Among { .. } => return,
            TextMatch::Index => None,
        };
        sql.push(" AND id IN (SELECT rowid FROM tickets_fts WHERE tickets_fts MATCH ")
            .push_bind(terms.clone());
        if let Some((lowest, highest)) = walked {
            sql.push(" AND rowid BETWEEN ").push_bind(lowest).push(" AND ").push_bind(highest);
        }
        sql.push(" UNION SELECT c.ticket_id FROM ticket_search_chunks c WHERE c.id IN");
        sql.push(" (SELECT rowid FROM ticket_search_chunks_fts WHERE ticket_search_chunks_fts MATCH ");
        sql.push_bind(terms).push(")");
        if let Some((lowest, highest)) = walked {
            sql.push(" AND c.ticket_id BETWEEN ").push_bind(lowest).push(" AND ").push_bind(highest);
        }
        sql.push(")");
    }

    /// FTS5 reads a match's rowids (the ticket's own row: its id) in either order and seeks to a
    /// rowid; the chunks' matches, which are few, are added.
    fn push_matches_in_id_order(
        sql: &mut QueryBuilder<Sqlite>,
        text: &str,
        after: TicketId,
        descending: bool,
        limit: i64,
    ) -> bool {
        let terms = fts5_terms(text);
        let (beyond, order) = if descending { ("<", "DESC") } else { (">", "ASC") };
        sql.push(
            "SELECT id FROM (SELECT id FROM (SELECT rowid AS id FROM tickets_fts WHERE tickets_fts MATCH ",
        )
        .push_bind(terms.clone())
        .push(format_args!(" AND rowid {beyond} "))
        .push_bind(after)
        .push(format_args!(" ORDER BY rowid {order} LIMIT "))
        .push_bind(limit)
        .push(") UNION SELECT c.ticket_id FROM ticket_search_chunks c WHERE c.id IN")
        .push(" (SELECT rowid FROM ticket_search_chunks_fts WHERE ticket_search_chunks_fts MATCH ")
        .push_bind(terms)
        .push(format_args!(") AND c.ticket_id {beyond} "))
        .push_bind(after)
        .push(format_args!(") ORDER BY id {order} LIMIT "))
        .push_bind(limit);
        true
    }

    /// Migration 0021's second FTS5 index, whose rowids are `hour << 32 | id`: read in rowid
    /// order, its matches come hour by hour. (The packing holds ticket ids below 2^32.)
    fn push_matches_in_update_order(
        sql: &mut QueryBuilder<Sqlite>,
        text: &str,
        after: UpdatePosition,
        descending: bool,
        limit: i64,
    ) -> bool {
        let (beyond, order) = if descending { ("<", "DESC") } else { (">", "ASC") };
        sql.push("SELECT rowid & 4294967295 AS id, rowid >> 32 AS hour FROM tickets_fts_by_update")
            .push(" WHERE tickets_fts_by_update MATCH ")
            .push_bind(fts5_terms(text))
            .push(format_args!(" AND rowid {beyond} "))
            .push_bind(after.hour << 32 | after.id)
            .push(format_args!(" ORDER BY rowid {order} LIMIT "))
            .push_bind(limit);
        true
    }

    /// `NOT INDEXED` leaves the planner only the lookups by rowid.
    fn push_tickets_among(sql: &mut QueryBuilder<Sqlite>, ids: &[TicketId]) {
        sql.push("(SELECT * FROM tickets NOT INDEXED WHERE id ");
        Self::push_one_of(sql, ids);
        sql.push(") AS tickets");
    }

    /// The ids as one JSON array, read back by `json_each`.
    fn push_one_of(sql: &mut QueryBuilder<Sqlite>, ids: &[i64]) {
        let ids = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        sql.push("IN (SELECT value FROM json_each(").push_bind(format!("[{ids}]")).push("))");
    }

    fn push_chunk_matches(sql: &mut QueryBuilder<Sqlite>, text: &str) {
        sql.push("SELECT DISTINCT c.ticket_id FROM ticket_search_chunks c WHERE c.id IN")
            .push(" (SELECT rowid FROM ticket_search_chunks_fts WHERE ticket_search_chunks_fts MATCH ")
            .push_bind(fts5_terms(text))
            .push(")");
    }
}

/// Each word as a quoted FTS5 string, so that no input is read as FTS5 query syntax.
fn fts5_terms(text: &str) -> String {
    text.split_whitespace()
        .map(|word| format!("\"{}\"", word.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::fts5_terms;

    #[test]
    fn search_words_are_quoted_so_nothing_is_fts5_syntax() {
        assert_eq!(fts5_terms("printer  fire"), r#""printer" "fire""#);
        assert_eq!(fts5_terms(r#"say "hi" OR NOT*"#), r#""say" """hi""" "OR" "NOT*""#);
    }
}
