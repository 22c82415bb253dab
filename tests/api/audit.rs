//! The audit log end to end: what is recorded, and what is not.

use serde_json::{json, Value};

use crate::common::*;
use crate::keys::create_key;

#[tokio::test]
async fn writes_and_refused_writes_are_audited_but_401s_are_not() {
    let server = TestServer::start().await;
    let publisher = create_key(
        &server,
        json!({"name": "ci", "role": "publish", "allowedNamePrefix": "acme"}),
    )
    .await;
    let upload = |id: &str, tarball: Vec<u8>| {
        server
            .client
            .post(format!("{}/artefacts/npm/{id}", server.url))
            .bearer_auth(&publisher.token)
            .body(tarball)
            .send()
    };
    assert_eq!(
        upload("acme@1", npm_tarball("acme", "1.0.0"))
            .await
            .unwrap()
            .status(),
        201
    );
    assert_eq!(
        upload("other@1", npm_tarball("other", "1.0.0"))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        upload("acme@1", npm_tarball_with("acme", "1.0.0", b"x"))
            .await
            .unwrap()
            .status(),
        409
    );
    assert_eq!(
        upload("acme@1", b"junk".to_vec()).await.unwrap().status(),
        422
    );
    let anonymous = server
        .client
        .post(format!("{}/artefacts/npm/acme@1", server.url))
        .body(npm_tarball("acme", "2.0.0"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    server
        .admin(
            server
                .client
                .patch(format!("{}/artefacts/acme@1", server.url)),
        )
        .json(&json!({"description": "d"}))
        .send()
        .await
        .unwrap();
    server
        .admin(
            server
                .client
                .delete(format!("{}/artefacts/acme@1", server.url)),
        )
        .send()
        .await
        .unwrap();
    server
        .admin(
            server
                .client
                .delete(format!("{}/keys/{}", server.url, publisher.key.id)),
        )
        .send()
        .await
        .unwrap();

    let audit: Value = server
        .admin_get("/audit?limit=500")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entries = audit["items"].as_array().unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "key.revoke",
            "artefact.delete",
            "artefact.patch",
            "artefact.upload_invalid",
            "artefact.upload_conflict",
            "artefact.upload_denied",
            "artefact.upload",
            "key.create",
        ],
        "newest first, and the anonymous 401 is not there"
    );
    let upload_entry = &entries[6];
    assert_eq!(upload_entry["outcome"], "success");
    assert_eq!(upload_entry["keyName"], "ci");
    assert_eq!(upload_entry["keyId"], publisher.key.id.as_str());
    assert_eq!(upload_entry["artefactId"], "acme@1");
    assert_eq!(upload_entry["architecture"], "noarch");
    assert_eq!(upload_entry["remoteAddr"], "127.0.0.1");
    assert!(upload_entry["detail"].as_str().unwrap().contains("1.0.0"));
    assert_eq!(entries[5]["outcome"], "denied");
    assert!(entries[5]["detail"]
        .as_str()
        .unwrap()
        .contains("allowedNamePrefix"));

    let filtered: Value = server
        .admin_get("/audit?action=artefact.upload_denied")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(filtered["items"].as_array().unwrap().len(), 1);

    let mut paged = Vec::new();
    let mut path = "/audit?limit=3".to_owned();
    loop {
        let page: Value = server
            .admin_get(&path)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        paged.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].clone()),
        );
        match page["nextCursor"].as_str() {
            Some(cursor) => path = format!("/audit?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(
        paged,
        entries.iter().map(|e| e["id"].clone()).collect::<Vec<_>>()
    );
}
