//! `GET /artefacts`: browse mode with cursors and filters, sync mode with tombstones.

use serde_json::{json, Value};

use crate::common::*;

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn browse_pages_by_id_with_an_opaque_cursor_and_filters() {
    let server = TestServer::start().await;
    for (i, name) in ["delta", "alpha", "echo", "charlie", "bravo"]
        .iter()
        .enumerate()
    {
        let category = if i % 2 == 0 { "plugins" } else { "services" };
        server
            .upload_ok(
                &format!("{name}@1"),
                &format!("category={category}"),
                npm_tarball(name, "1.0.0"),
                201,
            )
            .await;
    }
    server
        .upload_ok(
            "alpha@main",
            "kind=branch",
            npm_tarball("alpha", "1.0.0"),
            201,
        )
        .await;

    let mut seen = Vec::new();
    let mut path = "/artefacts?limit=2".to_owned();
    loop {
        let page: Value = server
            .admin_get(&path)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(page["items"].as_array().unwrap().len() <= 2);
        seen.extend(ids(&page));
        match page["nextCursor"].as_str() {
            Some(cursor) => path = format!("/artefacts?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(
        seen,
        [
            "alpha@1",
            "alpha@main",
            "bravo@1",
            "charlie@1",
            "delta@1",
            "echo@1"
        ]
    );

    let branches: Value = server
        .admin_get("/artefacts?kind=branch")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&branches), ["alpha@main"]);
    let plugins: Value = server
        .admin_get("/artefacts?category=plugins")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&plugins), ["bravo@1", "delta@1", "echo@1"]);
    let search: Value = server
        .admin_get("/artefacts?q=ALPHA")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&search), ["alpha@1", "alpha@main"]);
    let by_description: Value = server
        .admin_get("/artefacts?q=bravo%20for%20tests")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&by_description), ["bravo@1"]);
    assert_eq!(search["nextCursor"], Value::Null);
}

#[tokio::test]
async fn sync_mode_lists_changes_by_seq_with_tombstones_and_last_seq() {
    let server = TestServer::start().await;
    let a = server
        .upload_ok("a@1", "", npm_tarball("a", "1.0.0"), 201)
        .await;
    let b = server
        .upload_ok("b@1", "", npm_tarball("b", "1.0.0"), 201)
        .await;
    server
        .upload_ok("a@main", "kind=branch", npm_tarball("a", "1.0.0"), 201)
        .await;
    let a2 = server
        .upload_ok("a@1", "", npm_tarball("a", "1.1.0"), 200)
        .await;
    let tombstone: Value = server
        .admin(
            server
                .client
                .delete(format!("{}/artefacts/b@1", server.url)),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tombstone["deleted"], true);
    assert_eq!(tombstone["id"], "b@1");

    let all: Value = server
        .admin_get("/artefacts?since=0")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let seqs: Vec<i64> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["seq"].as_i64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "ordered by seq: {seqs:?}"
    );
    // a@1 changed twice but appears once, at its latest seq; b@1 appears as its tombstone.
    assert_eq!(ids(&all), ["a@main", "a@1", "b@1"]);
    assert_eq!(all["items"][2]["deleted"], true);
    assert!(all["items"][2]["deletedAt"].is_string());
    assert_eq!(all["lastSeq"], tombstone["seq"]);
    assert!(
        a["seq"].as_i64() < b["seq"].as_i64() && a2["seq"].as_i64() < tombstone["seq"].as_i64()
    );

    let since_a2: Value = server
        .admin_get(&format!("/artefacts?since={}", a2["seq"]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&since_a2), ["b@1"]);
    let page: Value = server
        .admin_get("/artefacts?since=0&limit=1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&page), ["a@main"]);
    assert_eq!(page["hasMore"], true);

    // The federation filter applies: anonymous callers (releases) never see the branch.
    let anonymous: Value = server
        .get("/artefacts?since=0")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&anonymous), ["a@1", "b@1"]);
}

#[tokio::test]
async fn patch_changes_metadata_but_not_data_updated_at() {
    let server = TestServer::start().await;
    let created = server
        .upload_ok(
            "acme@1",
            "category=plugins",
            npm_tarball("acme", "1.0.0"),
            201,
        )
        .await;
    let url = format!("{}/artefacts/acme@1", server.url);
    let patched: Value = server
        .admin_patch("/artefacts/acme@1")
        .json(&json!({"category": "services", "description": "Better words"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(patched["category"], "services");
    assert_eq!(patched["description"], "Better words");
    assert_eq!(patched["revision"], 2);
    assert_eq!(patched["dataUpdatedAt"], created["dataUpdatedAt"]);
    assert!(patched["seq"].as_i64() > created["seq"].as_i64());

    let bad_json = server
        .admin_patch("/artefacts/acme@1")
        .header("content-type", "application/json")
        .body("{\"category\": ")
        .send()
        .await
        .unwrap();
    let body = expect_error(bad_json, 400, "invalid_json").await;
    assert!(
        body["message"].as_str().unwrap().contains("column"),
        "{body}"
    );
    let unknown_field = server
        .admin_patch("/artefacts/acme@1")
        .json(&json!({"kind": "branch"}))
        .send()
        .await
        .unwrap();
    expect_error(unknown_field, 400, "invalid_json").await;
    let anonymous = server
        .client
        .patch(&url)
        .json(&json!({"description": "x"}))
        .send()
        .await
        .unwrap();
    expect_error(anonymous, 401, "unauthorized").await;
    let missing = server
        .admin(
            server
                .client
                .patch(format!("{}/artefacts/nope@1", server.url)),
        )
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    expect_error(missing, 404, "artefact_not_found").await;
}

#[tokio::test]
async fn deleting_slots_and_artefacts() {
    let server = TestServer::start().await;
    server
        .upload_ok("acme@1", "", npm_tarball("acme", "1.0.0"), 201)
        .await;
    let both = server
        .upload_ok(
            "acme@1",
            "architecture=x64",
            npm_tarball_with("acme", "1.0.0", b"x"),
            200,
        )
        .await;

    let remaining: Value = server
        .admin(
            server
                .client
                .delete(format!("{}/artefacts/acme@1/tarballs/x64", server.url)),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        remaining["tarballs"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["noarch"]
    );
    assert_ne!(remaining["dataUpdatedAt"], both["dataUpdatedAt"]);
    let gone_slot = server
        .admin(
            server
                .client
                .delete(format!("{}/artefacts/acme@1/tarballs/x64", server.url)),
        )
        .send()
        .await
        .unwrap();
    expect_error(gone_slot, 404, "slot_not_found").await;

    let anonymous = server
        .client
        .delete(format!("{}/artefacts/acme@1", server.url))
        .send()
        .await
        .unwrap();
    expect_error(anonymous, 401, "unauthorized").await;
    let deleted = server
        .admin(
            server
                .client
                .delete(format!("{}/artefacts/acme@1", server.url)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    expect_error(
        server.admin_get("/artefacts/acme@1").send().await.unwrap(),
        404,
        "artefact_not_found",
    )
    .await;

    // Re-creating continues the revision, so an old ETag can never match the new document.
    let recreated = server
        .upload_ok("acme@1", "", npm_tarball("acme", "0.1.0"), 201)
        .await;
    assert_eq!(recreated["revision"], 4);
    let changes: Value = server
        .admin_get("/artefacts?since=0")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&changes), ["acme@1"]);
    assert!(
        changes["items"][0]["deleted"].is_null(),
        "the tombstone is replaced by the new document"
    );
}
