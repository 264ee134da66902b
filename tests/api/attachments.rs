//! Files on tickets and comments: upload, reference, read where the comment is visible, delete,
//! and what is left when an upload goes wrong or is never used.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use ticketdesk::domain::{Attachment, Comment, Ticket};

use crate::clamd::Clamd;
use crate::helpers::{Backend, DemoTokens, EmptyDatabase, TestApp, TestResponse, files_folder};
use crate::s3::S3Server;

/// Runs each scenario `async fn name(place: Place)` on both databases, each with both storages:
/// `sqlite_local::name`, `sqlite_s3::name`, `postgres_local::name`, `postgres_s3::name`.
macro_rules! on_every_backend_and_storage {
    ($($scenario:ident),* $(,)?) => {
        on_every_backend_and_storage!(@module sqlite_local, Sqlite, false; $($scenario),*);
        on_every_backend_and_storage!(@module sqlite_s3, Sqlite, true; $($scenario),*);
        on_every_backend_and_storage!(@module postgres_local, Postgres, false; $($scenario),*);
        on_every_backend_and_storage!(@module postgres_s3, Postgres, true; $($scenario),*);
    };
    (@module $module:ident, $backend:ident, $s3:literal; $($scenario:ident),*) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::run(super::$scenario, super::Backend::$backend, $s3).await;
                }
            )*
        }
    };
}

/// Where a scenario runs: a fresh database, and files in a local folder or on S3 (in-process).
pub struct Place {
    database_url: String,
    s3: Option<S3Server>,
}

impl Place {
    /// The app on this place, with `settings` besides the storage's.
    async fn app(&self, settings: &[(&str, &str)]) -> TestApp {
        let storage = self.s3.as_ref().map(S3Server::settings).unwrap_or_default();
        let mut all = settings.to_vec();
        all.extend(storage.iter().map(|(name, value)| (name.as_str(), value.as_str())));
        TestApp::at(&self.database_url, &all).await
    }

    /// Every file the storage holds.
    fn stored_files(&self) -> Vec<std::path::PathBuf> {
        let folder = match &self.s3 {
            Some(s3) => s3.bucket_folder(),
            None => files_folder(&self.database_url),
        };
        let mut found = Vec::new();
        walk(&folder, &mut found);
        found
    }
}

fn walk(folder: &std::path::Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(folder).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() { walk(&path, found) } else { found.push(path) }
    }
}

async fn run<F: AsyncFnOnce(Place)>(scenario: F, backend: Backend, s3: bool) {
    crate::helpers::run(
        async |database: EmptyDatabase| {
            let s3 = if s3 { Some(S3Server::start().await) } else { None };
            scenario(Place { database_url: database.url, s3 }).await
        },
        backend,
    )
    .await;
}

on_every_backend_and_storage!(
    files_are_seen_exactly_where_their_ticket_or_comment_is,
    downloads_are_never_shown_inline_and_their_type_comes_from_the_bytes,
    a_token_is_single_use_only_its_uploaders_and_expires,
    two_replies_racing_for_one_upload_one_wins,
    a_file_over_the_limit_is_refused_and_leaves_nothing_behind,
    unused_uploads_are_swept_after_expiry_with_their_bytes,
    admins_delete_a_file_and_the_history_says_who,
    one_user_holds_only_so_many_unused_uploads,
    ranges_and_etags_are_served,
    a_replayed_reply_returns_the_same_files,
    a_file_sent_slowly_has_its_own_deadline,
    one_user_sends_only_so_many_files_at_once,
    with_a_scanner_infected_files_are_refused_and_not_kept,
    a_file_the_scanner_cannot_judge_is_refused,
);

/// Downloads redirected to S3 itself: only S3 storage has them, on both databases.
mod presigned {
    use super::{Backend, run};

    #[tokio::test]
    async fn sqlite_s3() {
        run(super::downloads_redirect_to_a_presigned_url_when_set, Backend::Sqlite, true).await;
    }

    #[tokio::test]
    async fn postgres_s3() {
        run(super::downloads_redirect_to_a_presigned_url_when_set, Backend::Postgres, true).await;
    }
}

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0";

fn content(id: i64) -> String {
    format!("/attachments/{id}/content")
}

async fn reply(app: &TestApp, token: &str, ticket: i64, body: Value) -> Comment {
    let added = app.comment(token, ticket, body).await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.text);
    added.body()
}

/// Alice's ticket with her screenshot, assigned to bob, with bob's public reply and internal note,
/// each with a file. Returns (ticket, her file, reply's file, note's file).
async fn a_conversation_with_files(app: &TestApp, tokens: &DemoTokens) -> (Ticket, i64, i64, i64) {
    let screenshot = app.upload_token(&tokens.alice, "screenshot.png", PNG).await;
    let created = app
        .call(
            Method::POST,
            "/tickets/",
            Some(&tokens.alice),
            Some(
                json!({"subject": "Crash", "description": "See the screenshot", "attachments": [screenshot]}),
            ),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let ticket: Ticket = created.body();
    assert_eq!(ticket.attachments.0.len(), 1);
    assert_eq!(
        (ticket.attachments.0[0].filename.as_str(), ticket.attachments.0[0].content_type.as_str()),
        ("screenshot.png", "image/png")
    );
    let assigned = app.assign(&tokens.carol, ticket.id, app.user_id("bob").await).await;
    assert_eq!(assigned.status, StatusCode::OK);

    let log = app.upload_token(&tokens.bob, "steps.txt", b"1. open the app\n2. it crashes\n").await;
    let public =
        reply(app, &tokens.bob, ticket.id, json!({"body": "Try these steps", "attachments": [log]})).await;
    let secret = app.upload_token(&tokens.bob, "internal.txt", b"the customer's licence is expired").await;
    let note = reply(
        app,
        &tokens.bob,
        ticket.id,
        json!({"body": "Licence", "internal": true, "attachments": [secret]}),
    )
    .await;
    (ticket.clone(), ticket.attachments.0[0].id, public.attachments.0[0].id, note.attachments.0[0].id)
}

async fn files_are_seen_exactly_where_their_ticket_or_comment_is(place: Place) {
    let app = place.app(&[]).await;
    let tokens = app.demo_tokens().await;
    let (ticket, on_ticket, on_reply, on_note) = a_conversation_with_files(&app, &tokens).await;
    app.add_user("eve", "eve-password-1", ticketdesk::domain::Role::Customer).await;
    app.add_user("dave", "dave-password-1", ticketdesk::domain::Role::Agent).await;
    let eve = app.login("eve", "eve-password-1").await;
    let dave = app.login("dave", "dave-password-1").await;

    let status = |response: TestResponse| response.status;
    for (who, token, sees_public, sees_internal) in [
        ("alice, the customer", &tokens.alice, true, false),
        ("bob, the agent", &tokens.bob, true, true),
        ("carol, an admin", &tokens.carol, true, true),
        ("eve, another customer", &eve, false, false),
        ("dave, another agent", &dave, false, false),
    ] {
        for (file, visible) in [(on_ticket, sees_public), (on_reply, sees_public), (on_note, sees_internal)] {
            let expected = if visible { StatusCode::OK } else { StatusCode::NOT_FOUND };
            assert_eq!(
                status(app.get(&format!("/attachments/{file}"), Some(token)).await),
                expected,
                "{who}: {file}"
            );
            assert_eq!(status(app.get(&content(file), Some(token)).await), expected, "{who}: {file}'s bytes");
        }
    }
    let downloaded = app.get(&content(on_reply), Some(&tokens.alice)).await;
    assert_eq!(downloaded.text, "1. open the app\n2. it crashes\n");
    let details: Attachment = app.get(&format!("/attachments/{on_note}"), Some(&tokens.bob)).await.body();
    assert_eq!((details.ticket_id, details.internal), (Some(ticket.id), true));

    // The conversation lists files with their comments; the customer's leaves the note out.
    let conversation = format!("/tickets/{}/comments", ticket.id);
    let seen_by_alice: Vec<Comment> = app.get(&conversation, Some(&tokens.alice)).await.body();
    let files: Vec<i64> = seen_by_alice.iter().flat_map(|c| c.attachments.0.iter().map(|f| f.id)).collect();
    assert_eq!(files, [on_reply]);
    let seen_by_bob: Vec<Comment> = app.get(&conversation, Some(&tokens.bob)).await.body();
    assert_eq!(seen_by_bob.iter().map(|c| c.attachments.0.len()).sum::<usize>(), 2);

    // The embed shows no files.
    let embed = app.get(&format!("/tickets/embed/{}", ticket.embed_token), None).await;
    assert_eq!(embed.status, StatusCode::OK);
    assert!(!embed.text.contains("screenshot") && !embed.text.contains("attachments"), "{}", embed.text);
}

async fn downloads_are_never_shown_inline_and_their_type_comes_from_the_bytes(place: Place) {
    let app = place.app(&[]).await;
    let alice = app.login("alice", "alice123").await;
    let html = b"<html><script>alert(document.cookie)</script></html>";
    let page = app.upload(&alice, "page.html", "text/html", html).await;
    assert_eq!(page.status, StatusCode::CREATED, "{}", page.text);
    assert_eq!(page.json["attachment"]["content_type"], "text/plain; charset=utf-8", "HTML claiming nothing");
    let disguised = app.upload(&alice, "cat.png", "image/png", html).await;
    assert_eq!(
        disguised.json["attachment"]["content_type"], "text/plain; charset=utf-8",
        "HTML claiming PNG"
    );
    let image = app.upload(&alice, "notes.html", "text/html", PNG).await;
    assert_eq!(image.json["attachment"]["content_type"], "image/png", "a PNG claiming HTML");

    let id = page.json["attachment"]["id"].as_i64().unwrap();
    let download = app.get(&content(id), Some(&alice)).await;
    assert_eq!(download.status, StatusCode::OK);
    assert_eq!(download.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(
        download.header("content-disposition"),
        Some("attachment; filename=\"page.html\"; filename*=UTF-8''page.html")
    );
    assert_eq!(download.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(download.header("content-security-policy"), Some("sandbox; default-src 'none'"));
    assert_eq!(download.text.as_bytes(), html);

    // Names lose their folders; other characters are kept, and encoded for the header.
    let traversal = app.upload(&alice, "../../etc/passwd", "text/plain", b"x").await;
    assert_eq!(traversal.json["attachment"]["filename"], "passwd");
    let german = app.upload(&alice, "Grüße.txt", "text/plain", b"x").await;
    assert_eq!(german.json["attachment"]["filename"], "Grüße.txt");
    let id = german.json["attachment"]["id"].as_i64().unwrap();
    let disposition = app.get(&content(id), Some(&alice)).await;
    assert_eq!(
        disposition.header("content-disposition"),
        Some("attachment; filename=\"Gr__e.txt\"; filename*=UTF-8''Gr%C3%BC%C3%9Fe.txt")
    );
    // Quotes and line breaks cannot end the header's quoted name or start a header of their own:
    // the plain `filename` has them replaced, `filename*` has them percent-encoded.
    for (sent, kept) in [(r#"say \"hi\".txt"#, r#"say "hi".txt"#), ("tab\there.txt", "tabhere.txt")] {
        let quoted = app.upload(&alice, sent, "text/plain", b"x").await;
        assert_eq!(quoted.status, StatusCode::CREATED, "{sent}: {}", quoted.text);
        assert_eq!(quoted.json["attachment"]["filename"], kept, "{sent}");
        let id = quoted.json["attachment"]["id"].as_i64().unwrap();
        let disposition = app.get(&content(id), Some(&alice)).await;
        let disposition = disposition.header("content-disposition").unwrap().to_owned();
        assert!(!disposition.contains(['\r', '\n', '\t']), "{disposition}");
        assert_eq!(disposition.matches('"').count(), 2, "{disposition}");
    }
    // A raw line break inside the form's part header is a malformed form, not a name.
    let broken = app.upload(&alice, "two\r\nlines.txt", "text/plain", b"x").await;
    broken.assert_problem(StatusCode::BAD_REQUEST);
    assert!(app.texts("SELECT filename FROM attachments WHERE filename LIKE 'two%'").await.is_empty());

    // Every stored object's key is the server's own, whatever the name.
    for path in place.stored_files() {
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(name.len() == 32 && name.chars().all(|c| c.is_ascii_hexdigit()), "{}", path.display());
    }
}

async fn a_token_is_single_use_only_its_uploaders_and_expires(place: Place) {
    let app = place.app(&[]).await;
    let tokens = app.demo_tokens().await;
    let id = app.bobs_ticket(&tokens, "Files").await;
    let bobs = app.upload_token(&tokens.bob, "a.txt", b"a").await;
    let taken = app.comment(&tokens.alice, id, json!({"body": "mine now", "attachments": [bobs]})).await;
    taken.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    reply(&app, &tokens.bob, id, json!({"body": "here", "attachments": [bobs]})).await;
    let again = app.comment(&tokens.bob, id, json!({"body": "again", "attachments": [bobs]})).await;
    again.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    let unknown = app.comment(&tokens.bob, id, json!({"body": "?", "attachments": ["upl_nothing"]})).await;
    unknown.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);

    let late = app.upload_token(&tokens.bob, "late.txt", b"late").await;
    app.execute("UPDATE attachments SET expires_at = created_at WHERE ticket_id IS NULL").await;
    let expired = app.comment(&tokens.bob, id, json!({"body": "late", "attachments": [late]})).await;
    expired.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    // A refused write wrote nothing: one comment, with its one file.
    let comments: Vec<Comment> = app.get(&format!("/tickets/{id}/comments"), Some(&tokens.bob)).await.body();
    assert_eq!(comments.len(), 1);
    assert_eq!(comments[0].attachments.0.len(), 1);
}

async fn two_replies_racing_for_one_upload_one_wins(place: Place) {
    let app = place.app(&[]).await;
    let tokens = app.demo_tokens().await;
    let id = app.bobs_ticket(&tokens, "Race").await;
    for round in 0..5 {
        let file = app.upload_token(&tokens.bob, "race.txt", b"r").await;
        let body = json!({"body": format!("round {round}"), "attachments": [file]});
        let (first, second) =
            tokio::join!(app.comment(&tokens.bob, id, body.clone()), app.comment(&tokens.bob, id, body));
        let mut statuses = [first.status, second.status];
        statuses.sort();
        assert_eq!(statuses, [StatusCode::CREATED, StatusCode::UNPROCESSABLE_ENTITY], "round {round}");
    }
}

async fn a_file_over_the_limit_is_refused_and_leaves_nothing_behind(place: Place) {
    let app = place.app(&[("ATTACHMENT_MAX_BYTES", "1000")]).await;
    let alice = app.login("alice", "alice123").await;
    let exact = app.upload(&alice, "exact.bin", "application/octet-stream", &[7u8; 1000]).await;
    assert_eq!(exact.status, StatusCode::CREATED, "{}", exact.text);
    for size in [1001, 200_000] {
        let big = app.upload(&alice, "big.bin", "application/octet-stream", &vec![7u8; size]).await;
        big.assert_problem(StatusCode::PAYLOAD_TOO_LARGE);
    }
    assert_eq!(app.texts("SELECT filename FROM attachments").await, ["exact.bin"]);
    assert_eq!(place.stored_files().len(), 1, "{:?}", place.stored_files());
}

async fn unused_uploads_are_swept_after_expiry_with_their_bytes(place: Place) {
    let app = place.app(&[]).await;
    let tokens = app.demo_tokens().await;
    let id = app.bobs_ticket(&tokens, "Sweep").await;
    let used = app.upload_token(&tokens.bob, "used.txt", b"used").await;
    reply(&app, &tokens.bob, id, json!({"body": "with a file", "attachments": [used]})).await;
    app.upload_token(&tokens.bob, "forgotten.txt", b"forgotten").await;
    assert_eq!(place.stored_files().len(), 2);

    let sweep = |at| ticketdesk::files::sweep(app.store.as_ref(), &app.files, at);
    assert_eq!(sweep(chrono::Utc::now()).await.unwrap(), 0, "nothing has expired yet");
    let after_expiry = chrono::Utc::now() + app.config.attachments.upload_ttl + chrono::TimeDelta::seconds(1);
    assert_eq!(sweep(after_expiry).await.unwrap(), 1);
    assert_eq!(app.texts("SELECT filename FROM attachments").await, ["used.txt"]);
    assert_eq!(place.stored_files().len(), 1);
    assert_eq!(sweep(after_expiry).await.unwrap(), 0, "a second sweep finds nothing");
}

async fn admins_delete_a_file_and_the_history_says_who(place: Place) {
    let app = place.app(&[]).await;
    let tokens = app.demo_tokens().await;
    let (ticket, _, on_reply, _) = a_conversation_with_files(&app, &tokens).await;
    let path = format!("/attachments/{on_reply}");
    app.call(Method::DELETE, &path, Some(&tokens.bob), None).await.assert_problem(StatusCode::FORBIDDEN);
    let deleted = app.call(Method::DELETE, &path, Some(&tokens.carol), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text);
    for token in [&tokens.alice, &tokens.bob, &tokens.carol] {
        assert_eq!(app.get(&path, Some(token)).await.status, StatusCode::NOT_FOUND);
        assert_eq!(app.get(&content(on_reply), Some(token)).await.status, StatusCode::NOT_FOUND);
    }
    app.call(Method::DELETE, &path, Some(&tokens.carol), None).await.assert_problem(StatusCode::NOT_FOUND);
    let comments: Vec<Comment> =
        app.get(&format!("/tickets/{}/comments", ticket.id), Some(&tokens.alice)).await.body();
    assert!(comments.iter().all(|c| c.attachments.0.is_empty()), "{comments:?}");
    let events = app.get(&format!("/tickets/{}/events", ticket.id), Some(&tokens.alice)).await.json;
    let deletion =
        events.as_array().unwrap().iter().find(|e| e["kind"] == "attachment_deleted").expect("an event");
    assert_eq!(deletion["actor_id"], app.user_id("carol").await);
    assert_eq!(deletion["from"], format!("{on_reply} steps.txt"));
    assert_eq!(place.stored_files().len(), 2, "the ticket's and the note's files remain");

    // Were the server to die between the deletion and removing the bytes, the sweeper removes them.
    let screenshot: Attachment =
        app.get(&format!("/attachments/{}", ticket.attachments.0[0].id), Some(&tokens.carol)).await.body();
    app.store.delete_attachment(screenshot.id, app.user_id("carol").await).await.unwrap();
    assert_eq!(place.stored_files().len(), 2, "the store alone does not remove bytes");
    let swept = ticketdesk::files::sweep(
        app.store.as_ref(),
        &app.files,
        chrono::Utc::now() + chrono::TimeDelta::seconds(1),
    );
    assert_eq!(swept.await.unwrap(), 2, "both deleted files' rows");
    assert_eq!(place.stored_files().len(), 1, "the note's file remains");
    assert_eq!(app.texts("SELECT filename FROM attachments").await, ["internal.txt"]);
}

async fn one_user_holds_only_so_many_unused_uploads(place: Place) {
    let app = place.app(&[("UPLOADS_PENDING_PER_USER", "2"), ("UPLOADS_IN_FLIGHT_PER_USER", "10")]).await;
    let tokens = app.demo_tokens().await;
    let id = app.bobs_ticket(&tokens, "Many").await;
    let first = app.upload_token(&tokens.bob, "1.txt", b"1").await;
    app.upload_token(&tokens.bob, "2.txt", b"2").await;
    app.upload(&tokens.bob, "3.txt", "text/plain", b"3").await.assert_problem(StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        app.upload(&tokens.alice, "a.txt", "text/plain", b"a").await.status,
        StatusCode::CREATED,
        "others may"
    );
    reply(&app, &tokens.bob, id, json!({"body": "one used", "attachments": [first]})).await;
    assert_eq!(app.upload(&tokens.bob, "3.txt", "text/plain", b"3").await.status, StatusCode::CREATED);

    // Six at once, from one user who holds none: the cap holds all the same.
    let bodies: Vec<Vec<u8>> = (0..6).map(|n| vec![b'0' + n]).collect();
    let burst = bodies.iter().map(|body| app.upload(&tokens.carol, "burst.txt", "text/plain", body));
    let mut statuses: Vec<StatusCode> =
        futures_util::future::join_all(burst).await.iter().map(|r| r.status).collect();
    statuses.sort();
    assert_eq!(statuses, [[StatusCode::CREATED; 2].as_slice(), &[StatusCode::TOO_MANY_REQUESTS; 4]].concat());
}

async fn ranges_and_etags_are_served(place: Place) {
    let app = place.app(&[]).await;
    let alice = app.login("alice", "alice123").await;
    let uploaded = app.upload(&alice, "digits.txt", "text/plain", b"0123456789").await;
    let id = uploaded.json["attachment"]["id"].as_i64().unwrap();
    let get = |range: &'static str, extra: Option<(&'static str, String)>| {
        let mut request =
            axum::http::Request::get(content(id)).header("authorization", format!("Bearer {alice}"));
        if !range.is_empty() {
            request = request.header("range", range);
        }
        if let Some((name, value)) = extra {
            request = request.header(name, value);
        }
        app.send(request.body(axum::body::Body::empty()).unwrap())
    };
    let part = get("bytes=2-4", None).await;
    assert_eq!((part.status, part.text.as_str()), (StatusCode::PARTIAL_CONTENT, "234"));
    assert_eq!(part.header("content-range"), Some("bytes 2-4/10"));
    assert_eq!(get("bytes=-3", None).await.text, "789");
    let outside = get("bytes=10-", None).await;
    assert_eq!(
        (outside.status, outside.header("content-range")),
        (StatusCode::RANGE_NOT_SATISFIABLE, Some("bytes */10"))
    );
    let whole = get("", None).await;
    let etag = whole.header("etag").unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", uploaded.json["attachment"]["sha256"].as_str().unwrap()));
    assert_eq!(get("", Some(("if-none-match", etag.clone()))).await.status, StatusCode::NOT_MODIFIED);
    let stale = get("bytes=0-1", Some(("if-range", "\"other\"".to_owned()))).await;
    assert_eq!(
        (stale.status, stale.text.as_str()),
        (StatusCode::OK, "0123456789"),
        "If-Range no longer holds"
    );
}

async fn a_replayed_reply_returns_the_same_files(place: Place) {
    let app = place.app(&[]).await;
    let tokens = app.demo_tokens().await;
    let id = app.bobs_ticket(&tokens, "Retried").await;
    let file = app.upload_token(&tokens.bob, "once.txt", b"once").await;
    let body = json!({"body": "with a file", "attachments": [file]});
    let send = || {
        let request = crate::helpers::json_request_from(
            "127.0.0.1",
            Method::POST,
            &format!("/tickets/{id}/comments"),
            Some(&tokens.bob),
            &body,
        );
        let (mut parts, body) = request.into_parts();
        parts.headers.insert("idempotency-key", "retry-1".parse().unwrap());
        app.send(axum::http::Request::from_parts(parts, body))
    };
    let first = send().await;
    let retry = send().await;
    assert_eq!((first.status, retry.status), (StatusCode::CREATED, StatusCode::CREATED), "{}", retry.text);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(first.json["attachments"], retry.json["attachments"]);
    assert_eq!(first.json["attachments"][0]["filename"], "once.txt");
}

/// A multipart upload whose body arrives in three parts, `pause` apart: a client on a slow link.
async fn slow_upload(app: &TestApp, token: &str, pause: std::time::Duration) -> TestResponse {
    let boundary = "slow-boundary";
    let parts = [
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow.txt\"\r\n\r\n"
        ),
        "sent slowly, ".to_owned(),
        format!("but sent\r\n--{boundary}--\r\n"),
    ];
    let body = futures_util::stream::unfold(parts.into_iter().enumerate(), move |mut parts| async move {
        let (index, part) = parts.next()?;
        if index > 0 {
            tokio::time::sleep(pause).await;
        }
        Some((Ok::<_, std::io::Error>(axum::body::Bytes::from(part)), parts))
    });
    let request = axum::http::Request::post("/uploads")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(axum::body::Body::from_stream(body))
        .unwrap();
    app.send(request).await
}

async fn a_file_sent_slowly_has_its_own_deadline(place: Place) {
    // Sent over two seconds: past every other request's deadline, within the upload's.
    let patient = place.app(&[("REQUEST_TIMEOUT_SECS", "1"), ("UPLOAD_TIMEOUT_SECS", "30")]).await;
    let alice = patient.login("alice", "alice123").await;
    let pause = std::time::Duration::from_millis(1100);
    let uploaded = slow_upload(&patient, &alice, pause).await;
    assert_eq!(uploaded.status, StatusCode::CREATED, "{}", uploaded.text);
    let id = uploaded.json["attachment"]["id"].as_i64().unwrap();
    assert_eq!(patient.get(&content(id), Some(&alice)).await.text, "sent slowly, but sent");

    let strict = place.app(&[("UPLOAD_TIMEOUT_SECS", "1")]).await;
    slow_upload(&strict, &alice, pause).await.assert_problem(StatusCode::REQUEST_TIMEOUT);
    // The cut-off upload's partial file is removed as its writer is dropped, off the request's task.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while place.stored_files().len() != 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(place.stored_files().len(), 1, "only the first file is kept: {:?}", place.stored_files());
}

async fn one_user_sends_only_so_many_files_at_once(place: Place) {
    let app = place.app(&[("UPLOADS_IN_FLIGHT_PER_USER", "1")]).await;
    let tokens = app.demo_tokens().await;
    // While alice's first file is still arriving (the server has begun storing it, so it holds
    // her slot), her second is refused; bob's is not.
    let slow = slow_upload(&app, &tokens.alice, std::time::Duration::from_millis(1000));
    tokio::pin!(slow);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let arriving = async {
        while app.texts("SELECT filename FROM attachments").await.is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "the slow upload never began");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        done = &mut slow => panic!("the slow upload ended before the others were sent: {}", done.text),
        () = arriving => {}
    }
    let (slow, second, bobs) = tokio::join!(
        slow,
        app.upload(&tokens.alice, "second.txt", "text/plain", b"2"),
        app.upload(&tokens.bob, "bobs.txt", "text/plain", b"b"),
    );
    assert_eq!(slow.status, StatusCode::CREATED, "{}", slow.text);
    second.assert_problem(StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(bobs.status, StatusCode::CREATED, "{}", bobs.text);
    // Its slot is given back when it is done.
    assert_eq!(app.upload(&tokens.alice, "third.txt", "text/plain", b"3").await.status, StatusCode::CREATED);
}

async fn with_a_scanner_infected_files_are_refused_and_not_kept(place: Place) {
    let Some(clamd) = Clamd::start(1 << 20) else { return };
    let app = place.app(&clamd.settings()).await;
    let tokens = app.demo_tokens().await;
    // Declared a harmless image, and hidden in the middle of a larger file: the bytes decide.
    let mut hidden = vec![b'a'; 100_000];
    hidden.extend_from_slice(&crate::clamd::eicar());
    hidden.extend_from_slice(&[b'z'; 100_000]);
    for (name, bytes) in [("eicar.png", crate::clamd::eicar()), ("notes.txt", hidden)] {
        let infected = app.upload(&tokens.alice, name, "image/png", &bytes).await;
        infected.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
        assert!(infected.text.contains(crate::clamd::SIGNATURE), "{name}: {}", infected.text);
    }
    assert_eq!(app.texts("SELECT filename FROM attachments").await, Vec::<String>::new());
    assert_eq!(place.stored_files(), Vec::<std::path::PathBuf>::new());

    // A clean file passes the same scanner, and is stored and usable as ever.
    let clean = app.upload_token(&tokens.alice, "log.txt", b"all fine here\n").await;
    let created = app
        .call(
            Method::POST,
            "/tickets/",
            Some(&tokens.alice),
            Some(json!({"subject": "Crash", "description": "See it", "attachments": [clean]})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let ticket: Ticket = created.body();
    assert_eq!(
        app.get(&content(ticket.attachments.0[0].id), Some(&tokens.alice)).await.text,
        "all fine here\n"
    );
    assert_eq!(place.stored_files().len(), 1);
}

async fn a_file_the_scanner_cannot_judge_is_refused(place: Place) {
    // Nothing listens on this port: the scan cannot start.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let app = place.app(&[("CLAMD_ADDR", closed.as_str())]).await;
    let alice = app.login("alice", "alice123").await;
    let unscanned = app.upload(&alice, "a.txt", "text/plain", b"hello").await;
    unscanned.assert_problem(StatusCode::SERVICE_UNAVAILABLE);
    assert!(unscanned.text.contains("malware scanner"), "{}", unscanned.text);

    // A scanner that takes streams of at most 64 KiB: a larger file is not judged, so not kept.
    let Some(clamd) = Clamd::start(64 * 1024) else { return };
    let app = place.app(&clamd.settings()).await;
    let small = app.upload(&alice, "small.txt", "text/plain", b"hello").await;
    assert_eq!(small.status, StatusCode::CREATED, "{}", small.text);
    let large = app.upload(&alice, "large.bin", "application/octet-stream", &vec![b'x'; 1 << 20]).await;
    large.assert_problem(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(app.texts("SELECT filename FROM attachments").await, ["small.txt"]);
    assert_eq!(place.stored_files().len(), 1, "{:?}", place.stored_files());
}

async fn downloads_redirect_to_a_presigned_url_when_set(place: Place) {
    let app = place.app(&[("S3_PRESIGNED_URL_SECS", "60")]).await;
    let tokens = app.demo_tokens().await;
    let page = b"<html><script>alert(document.cookie)</script></html>";
    let upload = app.upload(&tokens.alice, "page.html", "image/png", page).await;
    assert_eq!(upload.status, StatusCode::CREATED, "{}", upload.text);
    let (token, id) =
        (upload.json["token"].as_str().unwrap(), upload.json["attachment"]["id"].as_i64().unwrap());
    let created = app
        .call(
            Method::POST,
            "/tickets/",
            Some(&tokens.alice),
            Some(json!({"subject": "Page", "description": "It shows this", "attachments": [token]})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);

    // Access is checked before any URL is handed out.
    app.add_user("eve", "eve-password-1", ticketdesk::domain::Role::Customer).await;
    let eve = app.login("eve", "eve-password-1").await;
    let refused = app.get(&content(id), Some(&eve)).await;
    refused.assert_problem(StatusCode::NOT_FOUND);
    assert!(refused.headers.get("location").is_none());

    let redirect = app.get(&content(id), Some(&tokens.alice)).await;
    assert_eq!(redirect.status, StatusCode::TEMPORARY_REDIRECT, "{}", redirect.text);
    assert_eq!(redirect.headers["cache-control"], "no-store");
    let location = redirect.headers["location"].to_str().unwrap();
    let s3 = place.s3.as_ref().expect("S3 storage");
    assert!(location.starts_with(&s3.endpoint) && location.contains("X-Amz-Signature="), "{location}");
    assert!(location.contains("X-Amz-Expires=60"), "{location}");

    // S3 serves the bytes itself, as a download of the type the bytes are, not the one declared.
    let fetched = reqwest::get(location).await.unwrap();
    assert_eq!(fetched.status(), reqwest::StatusCode::OK);
    let header = |name: &str| fetched.headers()[name].to_str().unwrap().to_owned();
    assert_eq!(header("content-type"), "text/plain; charset=utf-8");
    assert!(
        header("content-disposition").starts_with("attachment; filename=\"page.html\""),
        "{}",
        header("content-disposition")
    );
    assert_eq!(fetched.bytes().await.unwrap().as_ref(), page);

    // A URL signed for one object opens no other.
    let other = location.replace(
        location.split('?').next().unwrap(),
        &format!("{}/{}/attachments/other", s3.endpoint, s3.bucket),
    );
    assert_eq!(reqwest::get(other).await.unwrap().status(), reqwest::StatusCode::FORBIDDEN);
}
