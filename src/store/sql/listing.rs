use std::collections::VecDeque;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, QueryBuilder, Type};
use uuid::Uuid;

use super::{Column, Dialect, SqlStore, TextMatch, UpdatePosition, hour_of};
use crate::domain::{Ticket, TicketId, TicketScope};
use crate::store::Result;
use crate::store::{Listing, SortKey, TicketCursor, TicketQuery, TicketSort};

/// How many tickets of the filtered listing a search walks, in the page's order, before it asks
/// the index instead. A frequent word fills a page long before; a rare one costs this walk plus
/// an index lookup, and neither grows with the number of tickets.
const SEARCH_WALK: i64 = 2000;

/// How many matches in id order a search reads first, after a walk left its page short; each
/// further read takes four times as many, up to `LAST_BATCH` (which bounds one statement's ids).
const FIRST_BATCH: i64 = 256;
const LAST_BATCH: i64 = 16_384;

/// The tickets a search walks: their lowest and highest ids, and the last of them in the page's
/// order if more follow.
struct Walk {
    end: Option<TicketCursor>,
    ids: (TicketId, TicketId),
}

/// A part of a listing: up to `limit` rows after `after` and up to `until` (inclusive).
#[derive(Debug, Clone)]
struct Span {
    after: Option<TicketCursor>,
    until: Option<TicketCursor>,
    text_match: TextMatch,
    limit: u32,
}

#[async_trait]
impl<DB: Dialect> Listing for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'n> &'n str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    String: Column<DB>,
    i64: Column<DB>,
    i32: Column<DB>,
    bool: Column<DB>,
    Uuid: Column<DB>,
    DateTime<Utc>: Column<DB>,
    Option<i64>: Column<DB>,
    Option<bool>: Column<DB>,
    Option<DateTime<Utc>>: Column<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
{
    /// A search first walks the next `SEARCH_WALK` tickets of the filtered listing, in the page's
    /// order, testing each: a frequent word fills the page early, at a cost that does not grow
    /// with the table. If the walk ends with the page short, the word is rare there, and the
    /// index finds the rest: in id order, or hour of update by hour, stopping when the page is
    /// settled, where the page goes by id or update; otherwise all its matches, then the page of
    /// them.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn tickets(&self, query: &TicketQuery) -> Result<Vec<Ticket>> {
        let whole = Span {
            after: query.after.clone(),
            until: None,
            text_match: TextMatch::Index,
            limit: query.limit,
        };
        if query.text.is_none() {
            return self.page(query, whole).await;
        }
        let Some(walk) = self.walk(query).await? else { return Ok(Vec::new()) };
        let text_match = TextMatch::Walk { ids: walk.ids };
        let walked = Span { until: walk.end.clone(), text_match, ..whole.clone() };
        let mut page = self.page(query, walked).await?;
        // Without an end, the walk covered every ticket left.
        let Some(end) = walk.end.filter(|_| page.len() < query.limit as usize) else { return Ok(page) };
        let extended = match query.sort.key {
            SortKey::Created => self.extend_in_id_order(query, &mut page, end.clone()).await?,
            SortKey::Updated => self.extend_in_update_order(query, &mut page, end.clone()).await?,
            SortKey::SlaDue => false,
        };
        if extended {
            return Ok(page);
        }
        let missing = query.limit - page.len() as u32;
        let rest = Span { after: Some(end), limit: missing, ..whole };
        page.extend(self.page(query, rest).await?);
        Ok(page)
    }
}

impl<DB: Dialect> SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'n> &'n str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    String: Column<DB>,
    i64: Column<DB>,
    Uuid: Column<DB>,
    DateTime<Utc>: Column<DB>,
{
    async fn page(&self, query: &TicketQuery, span: Span) -> Result<Vec<Ticket>> {
        let query = query.clone();
        self.read(async move |connection| {
            Self::listing(&query, &span).build_query_as().fetch_all(connection).await
        })
        .await
    }

    /// The statement for a page of a ticket listing, or a part of one: up to `limit` rows after
    /// `span.after` and up to `span.until` (inclusive), in the query's order, testing the search
    /// text, if any, the way `span.text_match` says.
    fn listing(query: &TicketQuery, span: &Span) -> QueryBuilder<DB> {
        let mut sql = QueryBuilder::<DB>::new(concat!("SELECT ", ticket_columns!(), " FROM "));
        match &span.text_match {
            TextMatch::Among { ids } => DB::push_tickets_among(&mut sql, ids),
            _ => {
                sql.push("tickets");
            }
        }
        sql.push(" WHERE 1 = 1");
        Self::push_filters(&mut sql, query);
        if let Some(text) = &query.text {
            DB::push_text_search(&mut sql, text, &span.text_match);
        }
        Self::push_span(&mut sql, query.sort, span.after.as_ref(), span.until.as_ref());
        sql.push(" LIMIT ").push_bind(i64::from(span.limit));
        sql
    }

    /// ` AND` the query's scope and filters, all but the search text.
    fn push_filters(sql: &mut QueryBuilder<DB>, query: &TicketQuery) {
        match query.scope {
            TicketScope::All => {}
            TicketScope::AssignedTo(agent) => {
                sql.push(" AND assigned_to = ").push_bind(agent);
            }
            TicketScope::CreatedBy(customer) => {
                sql.push(" AND created_by = ").push_bind(customer);
            }
        }
        if let Some(status) = query.status {
            sql.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(priority) = query.priority {
            sql.push(" AND priority = ").push_bind(priority.as_str());
        }
        match query.assignee {
            Some(Some(agent)) => {
                sql.push(" AND assigned_to = ").push_bind(agent);
            }
            Some(None) => {
                sql.push(" AND assigned_to IS NULL");
            }
            None => {}
        }
        if let Some(customer) = query.created_by {
            sql.push(" AND created_by = ").push_bind(customer);
        }
        if let Some(since) = query.updated_since {
            sql.push(" AND updated_at >= ").push_bind(since);
        }
        if let Some(status) = query.sla_status {
            sql.push(" AND sla_status = ").push_bind(status.as_str());
        }
        if let Some(before) = query.sla_due_before {
            sql.push(" AND sla_due_at <= ").push_bind(before);
        }
        if query.sort.key == SortKey::SlaDue {
            sql.push(" AND sla_due_at IS NOT NULL");
        }
    }

    /// Keyset conditions: rows strictly after `after` and at or before `until`, in `sort`'s order
    /// (ids break ties between equal update times), then the `ORDER BY`.
    fn push_span(
        sql: &mut QueryBuilder<DB>,
        sort: TicketSort,
        after: Option<&TicketCursor>,
        until: Option<&TicketCursor>,
    ) {
        let (next, previous_or_same, order) =
            if sort.descending { ("<", ">=", "DESC") } else { (">", "<=", "ASC") };
        if let Some(row) = after {
            Self::push_side_of(sql, sort, row, next);
        }
        if let Some(row) = until {
            Self::push_side_of(sql, sort, row, previous_or_same);
        }
        match sort.key {
            SortKey::Created => sql.push(format_args!(" ORDER BY id {order}")),
            key => sql.push(format_args!(" ORDER BY {column} {order}, id {order}", column = key.column())),
        };
    }

    /// ` AND` the rows on one side of `row` (`op`: `<`, `>=`, ...): by id, or by a time with ids
    /// among equal times, as one row comparison, which an index on (that time, id) serves.
    fn push_side_of(sql: &mut QueryBuilder<DB>, sort: TicketSort, row: &TicketCursor, op: &str) {
        match (sort.key, row.at) {
            (SortKey::Updated | SortKey::SlaDue, Some(at)) => {
                sql.push(format_args!(" AND ({}, id) {op} (", sort.key.column())).push_bind(at);
                sql.push(", ").push_bind(row.id).push(")");
            }
            _ => {
                sql.push(format_args!(" AND id {op} ")).push_bind(row.id);
            }
        }
    }

    /// Fills `page` with the matches after `after` in id order, reading them from the index in
    /// that order in batches that grow fourfold: a word whose matches start far beyond the walk,
    /// or grow sparse among the filters, costs a few seeks, not its whole match list. `false`,
    /// with `page` untouched, where the index cannot read the text in id order.
    async fn extend_in_id_order(
        &self,
        query: &TicketQuery,
        page: &mut Vec<Ticket>,
        mut after: TicketCursor,
    ) -> Result<bool> {
        let text = query.text.clone().unwrap_or_default();
        let descending = query.sort.descending;
        let mut batch = FIRST_BATCH;
        loop {
            let (text, after_id) = (text.clone(), after.id);
            let ids: Option<Vec<TicketId>> = self
                .read(async move |connection| {
                    let mut sql = QueryBuilder::<DB>::new("");
                    if !DB::push_matches_in_id_order(&mut sql, &text, after_id, descending, batch) {
                        return Ok(None);
                    }
                    sql.build_query_scalar().fetch_all(connection).await.map(Some)
                })
                .await?;
            let Some(ids) = ids else { return Ok(false) };
            let Some(&last) = ids.last() else { return Ok(true) };
            let read_all = (ids.len() as i64) < batch;
            let limit = query.limit - page.len() as u32;
            let found =
                Span { after: Some(after.clone()), until: None, text_match: TextMatch::Found { ids }, limit };
            page.extend(self.page(query, found).await?);
            if read_all || page.len() == query.limit as usize {
                return Ok(true);
            }
            after.id = last;
            batch = (batch * 4).min(LAST_BATCH);
        }
    }

    /// Fills `page` with the matches after `after` in update order, reading them from the index
    /// hour of last update by hour (migration 0021), in batches that grow fourfold. Postings of
    /// an hour the batches read whole are ranked by their exact times, with the filters, the
    /// fewest whole hours that could fill the page at a time: what they give is settled (any match
    /// still unranked was updated in an earlier hour). So a word that is frequent long ago and
    /// absent lately costs the postings of the page's hours, not its whole match list. The chunks'
    /// matches, which are few, are ranked every time until they settle. `false`, with `page`
    /// untouched, where the index cannot read the text in that order.
    async fn extend_in_update_order(
        &self,
        query: &TicketQuery,
        page: &mut Vec<Ticket>,
        after: TicketCursor,
    ) -> Result<bool> {
        let Some(at) = after.at else { return Ok(false) };
        let text = query.text.clone().unwrap_or_default();
        let descending = query.sort.descending;
        let beyond = |hour: i64, other: i64| if descending { hour > other } else { hour < other };
        // Every hour at or beyond the cursor's, in the page's order (ticket ids start at 1).
        let hour = hour_of(at);
        let mut position = UpdatePosition { hour: if descending { hour + 1 } else { hour }, id: 0 };
        let chunk_text = text.clone();
        let mut chunks: Vec<TicketId> = self
            .read(async move |connection| {
                let mut sql = QueryBuilder::<DB>::new("");
                DB::push_chunk_matches(&mut sql, &chunk_text);
                sql.build_query_scalar().fetch_all(connection).await
            })
            .await?;
        // Read, not yet ranked, in the page's order.
        let mut postings: VecDeque<(TicketId, i64)> = VecDeque::new();
        let (mut read_all, mut batch) = (false, FIRST_BATCH);
        loop {
            let whole = |hour: i64| read_all || beyond(hour, position.hour);
            if !read_all && !postings.front().is_some_and(|&(_, hour)| whole(hour)) {
                let text = text.clone();
                let read: Option<Vec<(TicketId, i64)>> = self
                    .read(async move |connection| {
                        let mut sql = QueryBuilder::<DB>::new("");
                        if !DB::push_matches_in_update_order(&mut sql, &text, position, descending, batch) {
                            return Ok(None);
                        }
                        sql.build_query_as().fetch_all(connection).await.map(Some)
                    })
                    .await?;
                let Some(read) = read else { return Ok(false) };
                read_all = (read.len() as i64) < batch;
                if let Some(&(id, hour)) = read.last() {
                    position = UpdatePosition { hour, id };
                }
                postings.extend(read);
                batch = (batch * 4).min(LAST_BATCH);
                continue;
            }
            let missing = query.limit as usize - page.len();
            let mut take = 0;
            while let Some(&(_, hour)) = postings.get(take) {
                if !whole(hour) || (take >= missing && hour != postings[take - 1].1) {
                    break;
                }
                take += 1;
            }
            let last_hour = take.checked_sub(1).map(|last| postings[last].1);
            let ids = postings.drain(..take).map(|(id, _)| id).chain(chunks.iter().copied()).collect();
            let exhausted = read_all && postings.is_empty();
            let limit = missing as u32;
            let found =
                Span { after: Some(after.clone()), until: None, text_match: TextMatch::Among { ids }, limit };
            let ranked = self.page(query, found).await?;
            let settled = ranked
                .iter()
                .take_while(|ticket| {
                    exhausted || last_hour.is_some_and(|last| !beyond(last, hour_of(ticket.updated_at)))
                })
                .count();
            page.extend(ranked.into_iter().take(settled));
            if exhausted || page.len() == query.limit as usize {
                return Ok(true);
            }
            let placed = &page[page.len() - settled..];
            chunks.retain(|&id| !placed.iter().any(|ticket| ticket.id == id));
        }
    }

    /// The tickets a search walks: the next `SEARCH_WALK` of the filtered listing after the
    /// query's cursor, whatever their text (so the filters' indexes serve it). `None` when no
    /// ticket is left.
    async fn walk(&self, query: &TicketQuery) -> Result<Option<Walk>> {
        let (sort, after) = (query.sort, query.after.as_ref());
        let (walked_query, walked_after) = (query.clone(), after.cloned());
        let (lowest, highest, count): (Option<TicketId>, Option<TicketId>, i64) = self
            .read(async move |connection| {
                let mut sql = QueryBuilder::<DB>::new(
                    "SELECT min(id), max(id), count(*) FROM (SELECT id FROM tickets WHERE 1 = 1",
                );
                Self::push_filters(&mut sql, &walked_query);
                Self::push_span(&mut sql, sort, walked_after.as_ref(), None);
                sql.push(" LIMIT ").push_bind(SEARCH_WALK).push(") AS walked");
                sql.build_query_as().fetch_one(connection).await
            })
            .await?;
        let (Some(lowest), Some(highest)) = (lowest, highest) else { return Ok(None) };
        let end = if count < SEARCH_WALK {
            None
        } else if sort.key == SortKey::Created {
            let id = if sort.descending { lowest } else { highest };
            Some(TicketCursor { sort, at: None, id })
        } else {
            let (query, after) = (query.clone(), after.cloned());
            let (id, at): (TicketId, DateTime<Utc>) = self
                .read(async move |connection| {
                    let mut sql = QueryBuilder::<DB>::new(format!(
                        "SELECT id, {} FROM tickets WHERE 1 = 1",
                        sort.key.column()
                    ));
                    Self::push_filters(&mut sql, &query);
                    Self::push_span(&mut sql, sort, after.as_ref(), None);
                    sql.push(" LIMIT 1 OFFSET ").push_bind(SEARCH_WALK - 1);
                    sql.build_query_as().fetch_one(connection).await
                })
                .await?;
            Some(TicketCursor { sort, at: Some(at), id })
        };
        Ok(Some(Walk { end, ids: (lowest, highest) }))
    }
}
