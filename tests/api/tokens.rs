//! Attacks on the bearer token: each must be refused with 401 and `error="invalid_token"`.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

use crate::helpers::{JWT_SECRET, TestApp};

crate::on_both_backends!(
    forged_expired_and_malformed_tokens_are_refused,
    missing_or_non_bearer_authorization_is_refused,
    a_valid_token_whose_user_is_gone_is_refused,
);

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

#[derive(Clone, Copy)]
enum Algorithm {
    HS256,
    HS384,
    HS512,
}

/// Signs as any HMAC algorithm would, so that a refusal is about the algorithm, not the signature.
fn sign(claims: &Value, secret: &[u8], alg: Algorithm) -> String {
    let name = match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
    };
    sign_with_header(&json!({"alg": name, "typ": "JWT"}), claims, secret, alg)
}

fn sign_with_header(header: &Value, claims: &Value, secret: &[u8], alg: Algorithm) -> String {
    let message = format!("{}.{}", b64(header), b64(claims));
    let bytes = message.as_bytes();
    let signature = match alg {
        Algorithm::HS256 => Hmac::<sha2::Sha256>::new_from_slice(secret)
            .unwrap()
            .chain_update(bytes)
            .finalize()
            .into_bytes()
            .to_vec(),
        Algorithm::HS384 => Hmac::<sha2::Sha384>::new_from_slice(secret)
            .unwrap()
            .chain_update(bytes)
            .finalize()
            .into_bytes()
            .to_vec(),
        Algorithm::HS512 => Hmac::<sha2::Sha512>::new_from_slice(secret)
            .unwrap()
            .chain_update(bytes)
            .finalize()
            .into_bytes()
            .to_vec(),
    };
    format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// A token's claims, read without checking anything.
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

async fn forged_expired_and_malformed_tokens_are_refused(app: TestApp) {
    let alice = app.login("alice", "alice123").await;
    let alice_id = app.user_id("alice").await;
    // The login session (refresh token family) alice's token was issued in.
    let sid = claims_of(&alice)["sid"].as_str().expect("a session id").to_owned();
    let carol_id = app.user_id("carol").await;
    let claims = |sub: i64, exp: u64| json!({"sub": sub.to_string(), "role": "customer", "ver": 0, "sid": sid, "iss": "ticketdesk", "iat": now(), "exp": exp});
    let secret = JWT_SECRET.as_bytes();

    // Sanity: a token we sign like the server does is accepted, so refusals below mean something.
    let genuine = sign(&claims(alice_id, now() + 600), secret, Algorithm::HS256);
    assert_eq!(app.get("/users/me", Some(&genuine)).await.status, StatusCode::OK);
    // A few seconds of clock skew between servers are allowed (CLOCK_SKEW_SECS), no more.
    let skewed = json!({"sub": alice_id.to_string(), "role": "customer", "ver": 0, "sid": sid, "iss": "ticketdesk", "iat": now() + 5, "nbf": now() + 5, "exp": now() + 600});
    let skewed = sign(&skewed, secret, Algorithm::HS256);
    assert_eq!(app.get("/users/me", Some(&skewed)).await.status, StatusCode::OK, "within the skew");

    let [header, _, signature]: [&str; 3] = alice.split('.').collect::<Vec<_>>().try_into().unwrap();
    let as_carol = json!({"sub": carol_id.to_string(), "role": "admin", "ver": 0, "sid": sid, "iss": "ticketdesk", "iat": now(), "exp": now() + 600});
    let attacks: Vec<(&str, String)> = vec![
        ("alg none", format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&as_carol))),
        ("tampered payload", format!("{header}.{}.{signature}", b64(&as_carol))),
        (
            "wrong key",
            sign(
                &claims(carol_id, now() + 600),
                b"another-secret-that-is-long-enough-0000",
                Algorithm::HS256,
            ),
        ),
        ("HS512", sign(&claims(alice_id, now() + 600), secret, Algorithm::HS512)),
        ("HS384", sign(&claims(alice_id, now() + 600), secret, Algorithm::HS384)),
        // RS256 verified with the HMAC secret as a "public key": the classic confusion attack.
        (
            "RS256 header",
            sign_with_header(
                &json!({"alg": "RS256", "typ": "JWT"}),
                &claims(alice_id, now() + 600),
                secret,
                Algorithm::HS256,
            ),
        ),
        (
            "ES256 header",
            sign_with_header(
                &json!({"alg": "ES256", "typ": "JWT"}),
                &claims(alice_id, now() + 600),
                secret,
                Algorithm::HS256,
            ),
        ),
        (
            "issued in the future",
            sign(
                &json!({"sub": alice_id.to_string(), "role": "customer", "ver": 0, "sid": sid, "iss": "ticketdesk", "iat": now() + 60, "exp": now() + 600}),
                secret,
                Algorithm::HS256,
            ),
        ),
        (
            "not valid before a future time",
            sign(
                &json!({"sub": alice_id.to_string(), "role": "customer", "ver": 0, "sid": sid, "iss": "ticketdesk", "iat": now(), "nbf": now() + 60, "exp": now() + 600}),
                secret,
                Algorithm::HS256,
            ),
        ),
        ("expired", sign(&claims(alice_id, now() - 5), secret, Algorithm::HS256)),
        (
            "no exp",
            sign(
                &json!({"sub": alice_id.to_string(), "role": "customer", "ver": 0, "sid": sid, "iss": "ticketdesk", "iat": now()}),
                secret,
                Algorithm::HS256,
            ),
        ),
        (
            "other issuer",
            sign(
                &json!({"sub": alice_id.to_string(), "role": "customer", "ver": 0, "sid": sid, "iss": "evil", "iat": now(), "exp": now() + 600}),
                secret,
                Algorithm::HS256,
            ),
        ),
        (
            "non-numeric sub",
            sign(
                &json!({"sub": "alice", "role": "customer", "ver": 0, "sid": sid, "iss": "ticketdesk", "iat": now(), "exp": now() + 600}),
                secret,
                Algorithm::HS256,
            ),
        ),
        (
            "no session",
            sign(
                &json!({"sub": alice_id.to_string(), "role": "customer", "ver": 0, "iss": "ticketdesk", "iat": now(), "exp": now() + 600}),
                secret,
                Algorithm::HS256,
            ),
        ),
        (
            "a session that does not exist",
            sign(
                &json!({"sub": alice_id.to_string(), "role": "customer", "ver": 0, "sid": uuid::Uuid::new_v4(), "iss": "ticketdesk", "iat": now(), "exp": now() + 600}),
                secret,
                Algorithm::HS256,
            ),
        ),
        ("truncated", alice[..alice.len() - 3].to_owned()),
        ("garbage", "not.a.jwt".to_owned()),
        ("empty segments", "..".to_owned()),
    ];
    for (attack, token) in attacks {
        let response = app.get("/users/me", Some(&token)).await;
        assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{attack}: {}", response.text);
        response.assert_problem(StatusCode::UNAUTHORIZED);
        assert_eq!(response.header("www-authenticate"), Some(r#"Bearer error="invalid_token""#), "{attack}");
    }
}

async fn missing_or_non_bearer_authorization_is_refused(app: TestApp) {
    let alice = app.login("alice", "alice123").await;
    for authorization in [
        "Basic YWxpY2U6YWxpY2UxMjM=".to_owned(),
        format!("Token {alice}"),
        "Bearer".to_owned(),
        "Bearer    ".to_owned(),
        alice.clone(),
    ] {
        let request =
            Request::get("/tickets/my").header("authorization", &authorization).body(Body::empty()).unwrap();
        app.send(request).await.assert_problem(StatusCode::UNAUTHORIZED);
    }
    // The scheme is case-insensitive (RFC 9110 §11.1).
    let request = Request::get("/tickets/my")
        .header("authorization", format!("bearer {alice}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.send(request).await.status, StatusCode::OK);
}

async fn a_valid_token_whose_user_is_gone_is_refused(app: TestApp) {
    // Signed with the right key for a user id that does not exist (e.g. deleted since).
    let claims = json!({"sub": "999999", "role": "admin", "ver": 0, "iss": "ticketdesk", "iat": now(), "exp": now() + 600});
    let token = sign(&claims, JWT_SECRET.as_bytes(), Algorithm::HS256);
    let alice = app.login("alice", "alice123").await;
    let existing = app.create_ticket_id(&alice, "Exists").await;
    for path in ["/tickets/".to_owned(), format!("/tickets/{existing}"), "/tickets/424242".to_owned()] {
        let response = app.get(&path, Some(&token)).await;
        response.assert_problem(StatusCode::UNAUTHORIZED);
        assert_eq!(response.header("www-authenticate"), Some(r#"Bearer error="invalid_token""#), "{path}");
    }
}
