//! Business calendars and SLA policies: what admins configure, checked and kept on both backends.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestResponse};

crate::on_both_backends!(
    admins_keep_calendars_and_others_may_not_touch_them,
    calendars_with_bad_hours_or_zones_are_refused,
    policies_are_tried_by_position_and_checked,
    a_calendar_in_use_cannot_be_deleted,
);

fn berlin_office() -> Value {
    let day = json!([{"start": "09:00", "end": "12:00"}, {"start": "13:00", "end": "17:00"}]);
    json!({
        "name": "Berlin office",
        "time_zone": "Europe/Berlin",
        "hours": {"monday": day, "tuesday": day, "wednesday": day, "thursday": day, "friday": day},
        "holidays": ["2026-12-25", "2026-12-24", "2026-12-25"],
    })
}

async fn send(app: &TestApp, method: Method, path: &str, token: &str, body: Value) -> TestResponse {
    app.call(method, path, Some(token), Some(body)).await
}

async fn admins_keep_calendars_and_others_may_not_touch_them(app: TestApp) {
    let tokens = app.demo_tokens().await;
    for token in [&tokens.alice, &tokens.bob] {
        send(&app, Method::POST, "/calendars", token, berlin_office())
            .await
            .assert_problem(StatusCode::FORBIDDEN);
        app.get("/calendars", Some(token)).await.assert_problem(StatusCode::FORBIDDEN);
    }
    app.get("/calendars", None).await.assert_problem(StatusCode::UNAUTHORIZED);

    let created = send(&app, Method::POST, "/calendars", &tokens.carol, berlin_office()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.json["id"].as_i64().unwrap();
    assert_eq!(created.header("location"), Some(format!("/calendars/{id}").as_str()));
    assert_eq!(created.json["holidays"], json!(["2026-12-24", "2026-12-25"]), "sorted, once each");
    assert_eq!(created.json["hours"]["friday"][1], json!({"start": "13:00", "end": "17:00"}));
    assert!(created.json["hours"].get("saturday").is_none(), "{}", created.json);

    let read = app.get(&format!("/calendars/{id}"), Some(&tokens.carol)).await;
    assert_eq!(read.json, created.json);
    send(&app, Method::PUT, &format!("/calendars/{id}"), &tokens.bob, berlin_office())
        .await
        .assert_problem(StatusCode::FORBIDDEN);

    let mut night_shift = berlin_office();
    night_shift["name"] = json!("Night shift");
    night_shift["time_zone"] = json!("America/New_York");
    night_shift["hours"] = json!({"sunday": [{"start": "22:00", "end": "06:00"}]});
    let replaced = send(&app, Method::PUT, &format!("/calendars/{id}"), &tokens.carol, night_shift).await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.text);
    assert_eq!(replaced.json["time_zone"], "America/New_York");
    assert_eq!(replaced.json["hours"], json!({"sunday": [{"start": "22:00", "end": "06:00"}]}));
    assert_eq!(app.get("/calendars", Some(&tokens.carol)).await.json.as_array().unwrap().len(), 1);

    // Names are unique.
    send(&app, Method::POST, "/calendars", &tokens.carol, berlin_office()).await;
    let clash = send(&app, Method::PUT, &format!("/calendars/{id}"), &tokens.carol, berlin_office()).await;
    clash.assert_problem(StatusCode::CONFLICT);

    let deleted = app.call(Method::DELETE, &format!("/calendars/{id}"), Some(&tokens.carol), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    app.get(&format!("/calendars/{id}"), Some(&tokens.carol)).await.assert_problem(StatusCode::NOT_FOUND);
    send(&app, Method::PUT, &format!("/calendars/{id}"), &tokens.carol, berlin_office())
        .await
        .assert_problem(StatusCode::NOT_FOUND);
}

async fn calendars_with_bad_hours_or_zones_are_refused(app: TestApp) {
    let carol = app.login("carol", "carol123").await;
    let with = |field: &str, value: Value| {
        let mut calendar = berlin_office();
        calendar[field] = value;
        calendar
    };
    for (calendar, says) in [
        (with("time_zone", json!("Europe/Atlantis")), "time_zone"),
        (with("hours", json!({"monday": [{"start": "9:00", "end": "17:00"}]})), "hours.monday"),
        (
            with(
                "hours",
                json!({"monday": [{"start": "09:00", "end": "17:00"}, {"start": "16:00", "end": "18:00"}]}),
            ),
            "overlap",
        ),
        (
            with(
                "hours",
                json!({"sunday": [{"start": "20:00", "end": "03:00"}], "monday": [{"start": "02:00", "end": "09:00"}]}),
            ),
            "overlap",
        ),
        (with("name", json!("  ")), "name"),
    ] {
        let refused = send(&app, Method::POST, "/calendars", &carol, calendar).await;
        let detail = refused.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
        assert!(detail.contains(says), "{says}: {detail}");
    }
    for calendar in [with("hours", json!({"someday": []})), with("holidays", json!(["25.12.2026"]))] {
        let refused = send(&app, Method::POST, "/calendars", &carol, calendar).await;
        assert!(refused.status.is_client_error(), "{}", refused.text);
    }
    assert_eq!(app.get("/calendars", Some(&carol)).await.json, json!([]), "nothing was stored");
}

fn policy(name: &str, position: i64, priorities: Value, calendar: Value) -> Value {
    json!({
        "name": name,
        "position": position,
        "conditions": {"priorities": priorities},
        "targets": [{"metric": "resolution", "minutes": 480}, {"metric": "first_response", "minutes": 60}],
        "warn_before_minutes": 15,
        "calendar_id": calendar,
    })
}

async fn policies_are_tried_by_position_and_checked(app: TestApp) {
    let tokens = app.demo_tokens().await;
    let calendar =
        send(&app, Method::POST, "/calendars", &tokens.carol, berlin_office()).await.json["id"].clone();
    send(
        &app,
        Method::POST,
        "/sla-policies",
        &tokens.bob,
        policy("Urgent", 1, json!(["urgent"]), json!(null)),
    )
    .await
    .assert_problem(StatusCode::FORBIDDEN);

    let everyone = send(
        &app,
        Method::POST,
        "/sla-policies",
        &tokens.carol,
        policy("Everyone", 20, json!([]), calendar.clone()),
    )
    .await;
    assert_eq!(everyone.status, StatusCode::CREATED, "{}", everyone.text);
    assert_eq!(
        everyone.json["pause_statuses"],
        json!(["pending"]),
        "waiting on the customer pauses by default"
    );
    assert_eq!(
        everyone.json["targets"],
        json!([{"metric": "first_response", "minutes": 60}, {"metric": "resolution", "minutes": 480}])
    );
    let urgent = send(
        &app,
        Method::POST,
        "/sla-policies",
        &tokens.carol,
        policy("Urgent", 10, json!(["urgent", "high"]), json!(null)),
    )
    .await;
    assert_eq!(urgent.status, StatusCode::CREATED, "{}", urgent.text);
    let listed = app.get("/sla-policies", Some(&tokens.carol)).await;
    let names: Vec<&str> =
        listed.json.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Urgent", "Everyone"], "by position");

    for (body, status, says) in [
        (policy("Urgent", 30, json!([]), json!(null)), StatusCode::CONFLICT, "named"),
        (policy("Other", 10, json!([]), json!(null)), StatusCode::CONFLICT, "position 10"),
        (policy("Other", 30, json!([]), json!(999)), StatusCode::UNPROCESSABLE_ENTITY, "no such calendar"),
        (policy("Other", 0, json!([]), json!(null)), StatusCode::UNPROCESSABLE_ENTITY, "position"),
        (
            json!({"name": "Other", "position": 30, "targets": []}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "targets",
        ),
        (
            json!({"name": "Other", "position": 30, "targets": [{"metric": "resolution", "minutes": 60}], "warn_before_minutes": 90}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "warn_before_minutes",
        ),
    ] {
        let refused = send(&app, Method::POST, "/sla-policies", &tokens.carol, body).await;
        let detail = refused.assert_problem(status);
        assert!(detail.contains(says), "{says}: {detail}");
    }
    let unknown_metric =
        json!({"name": "Other", "position": 30, "targets": [{"metric": "happiness", "minutes": 60}]});
    assert!(
        send(&app, Method::POST, "/sla-policies", &tokens.carol, unknown_metric)
            .await
            .status
            .is_client_error()
    );

    // Replacing moves it; its old position is free again.
    let id = urgent.json["id"].as_i64().unwrap();
    let moved = send(
        &app,
        Method::PUT,
        &format!("/sla-policies/{id}"),
        &tokens.carol,
        policy("Urgent", 30, json!(["urgent"]), json!(null)),
    )
    .await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.text);
    let listed = app.get("/sla-policies", Some(&tokens.carol)).await;
    let names: Vec<&str> =
        listed.json.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Everyone", "Urgent"]);
    // Whole numbers may be written as JSON writes them: 40.0 is 40.
    let whole =
        json!({"name": "Whole", "position": 40.0, "targets": [{"metric": "resolution", "minutes": 60.0}]});
    let whole = send(&app, Method::POST, "/sla-policies", &tokens.carol, whole).await;
    assert_eq!(
        (whole.status, whole.json["position"].clone()),
        (StatusCode::CREATED, json!(40)),
        "{}",
        whole.text
    );
    let taken_again =
        send(&app, Method::POST, "/sla-policies", &tokens.carol, policy("Third", 10, json!([]), json!(null)))
            .await;
    assert_eq!(taken_again.status, StatusCode::CREATED, "{}", taken_again.text);

    let gone = app.call(Method::DELETE, &format!("/sla-policies/{id}"), Some(&tokens.carol), None).await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    app.get(&format!("/sla-policies/{id}"), Some(&tokens.carol)).await.assert_problem(StatusCode::NOT_FOUND);
}

async fn a_calendar_in_use_cannot_be_deleted(app: TestApp) {
    let carol = app.login("carol", "carol123").await;
    let calendar =
        send(&app, Method::POST, "/calendars", &carol, berlin_office()).await.json["id"].as_i64().unwrap();
    let used =
        send(&app, Method::POST, "/sla-policies", &carol, policy("Everyone", 1, json!([]), json!(calendar)))
            .await;
    assert_eq!(used.status, StatusCode::CREATED, "{}", used.text);
    let refused = app.call(Method::DELETE, &format!("/calendars/{calendar}"), Some(&carol), None).await;
    assert!(refused.assert_problem(StatusCode::CONFLICT).contains("Everyone"), "{}", refused.text);
    assert_eq!(app.get(&format!("/calendars/{calendar}"), Some(&carol)).await.status, StatusCode::OK);

    let policy_id = used.json["id"].as_i64().unwrap();
    let around_the_clock = policy("Everyone", 1, json!([]), json!(null));
    assert_eq!(
        send(&app, Method::PUT, &format!("/sla-policies/{policy_id}"), &carol, around_the_clock).await.status,
        StatusCode::OK
    );
    let deleted = app.call(Method::DELETE, &format!("/calendars/{calendar}"), Some(&carol), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text);
}
