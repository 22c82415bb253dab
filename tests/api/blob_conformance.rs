//! The blob half of the conformance suite: the same test bodies against local files and the
//! S3 protocol.

use bytes::Bytes;
use reliquary::blobs::{BlobKey, Blobs};

use crate::common::*;

fn local_blobs() -> (Blobs, Option<tempfile::TempDir>) {
    let dir = tempfile::tempdir().unwrap();
    (Blobs::local(dir.path()).unwrap(), Some(dir))
}

fn s3_blobs() -> (Blobs, Option<tempfile::TempDir>) {
    (
        Blobs::s3(&s3_url(), Some(&require_env("RELIQUARY_S3_ENDPOINT"))).unwrap(),
        None,
    )
}

async fn collect(stream: reliquary::blobs::BlobStream) -> Vec<u8> {
    use futures::TryStreamExt;
    let chunks: Vec<Bytes> = stream.body.into_stream().try_collect().await.unwrap();
    chunks.concat()
}

async fn uploads_stream_in_and_promote_to_their_content_address(blobs: Blobs) {
    let payload: Vec<u8> = (0..20_000_000u32).map(|i| (i % 251) as u8).collect();
    let sha = sha256_hex(&payload);
    let mut writer = blobs.begin_upload().await.unwrap();
    let upload = writer.id;
    for chunk in payload.chunks(1 << 20) {
        writer.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    writer.finish().await.unwrap();
    assert_eq!(blobs.list("uploads").await.unwrap().len(), 1);
    blobs.promote(upload, &sha).await.unwrap();
    assert!(blobs.exists(&BlobKey::sha256(&sha)).await.unwrap());
    assert!(blobs.list("uploads").await.unwrap().is_empty());

    let whole = blobs.open(&BlobKey::sha256(&sha), None).await.unwrap();
    assert_eq!(whole.size, payload.len() as u64);
    assert_eq!(sha256_hex(&collect(whole).await), sha);
    let part = blobs
        .open(&BlobKey::sha256(&sha), Some(100..200))
        .await
        .unwrap();
    assert_eq!(part.size, payload.len() as u64);
    assert_eq!(collect(part).await, &payload[100..200]);

    // The same bytes uploaded again are simply dropped.
    let mut again = blobs.begin_upload().await.unwrap();
    let second = again.id;
    again.write(Bytes::from(payload.clone())).await.unwrap();
    again.finish().await.unwrap();
    blobs.promote(second, &sha).await.unwrap();
    assert_eq!(blobs.list("sha256").await.unwrap().len(), 1);
    assert!(blobs.list("uploads").await.unwrap().is_empty());
}

async fn abandoned_uploads_are_discarded(blobs: Blobs) {
    let mut writer = blobs.begin_upload().await.unwrap();
    let id = writer.id;
    writer.write(Bytes::from_static(b"partial")).await.unwrap();
    writer.abort().await;
    blobs.discard(id).await;
    assert!(blobs.list("uploads").await.unwrap().is_empty());
    let missing = blobs.open(&BlobKey::sha256(&"0".repeat(64)), None).await;
    assert!(matches!(missing, Err(object_store::Error::NotFound { .. })));
    assert!(!blobs
        .exists(&BlobKey::sha256(&"0".repeat(64)))
        .await
        .unwrap());
    blobs.ping().await.unwrap();
}

async fn attestations_round_trip(blobs: Blobs) {
    let bundle = Bytes::from_static(br#"{"bundle": true}"#);
    let reference = blobs.put_attestation(bundle.clone()).await.unwrap();
    assert_eq!(reference.sha256, sha256_hex(&bundle));
    assert_eq!(
        blobs.read_attestation(&reference.sha256).await.unwrap(),
        bundle
    );
}

async fn store_blob(blobs: &Blobs, payload: &[u8]) -> String {
    let sha = sha256_hex(payload);
    let mut writer = blobs.begin_upload().await.unwrap();
    let upload = writer.id;
    writer.write(Bytes::copy_from_slice(payload)).await.unwrap();
    writer.finish().await.unwrap();
    blobs.promote(upload, &sha).await.unwrap();
    sha
}

/// Small tarballs are read whole and kept in memory: cold and cached reads, whole or ranged,
/// must give the same bytes.
async fn small_blobs_read_the_same_cold_and_cached(blobs: Blobs) {
    let payload: Vec<u8> = (0..6_000u32).map(|i| (i % 253) as u8).collect();
    let sha = store_blob(&blobs, &payload).await;
    let key = BlobKey::sha256(&sha);
    let ranged_cold = blobs.open(&key, Some(10..20)).await.unwrap();
    assert_eq!(ranged_cold.size, 6_000);
    assert_eq!(collect(ranged_cold).await, &payload[10..20]);
    for _ in 0..2 {
        let whole = blobs.open(&key, None).await.unwrap();
        assert_eq!(whole.size, 6_000);
        assert_eq!(collect(whole).await, payload);
        let ranged = blobs.open(&key, Some(5_990..6_000)).await.unwrap();
        assert_eq!(collect(ranged).await, &payload[5_990..]);
    }
}

#[tokio::test]
async fn a_small_blob_is_cached_only_once_its_bytes_match_its_digest() {
    let (blobs, dir) = local_blobs();
    let file = |sha: &str| dir.as_ref().unwrap().path().join("sha256").join(sha);

    // Damaged on disk before its first read: served as it is, but not kept.
    let payload = vec![7u8; 4_000];
    let sha = store_blob(&blobs, &payload).await;
    std::fs::write(file(&sha), b"damaged").unwrap();
    let damaged = blobs.open(&BlobKey::sha256(&sha), None).await.unwrap();
    assert_eq!(collect(damaged).await, b"damaged");
    std::fs::write(file(&sha), &payload).unwrap();
    let repaired = blobs.open(&BlobKey::sha256(&sha), None).await.unwrap();
    assert_eq!(
        collect(repaired).await,
        payload,
        "the repair is seen at once"
    );

    // A verified copy is served from memory: later damage on disk does not reach readers.
    std::fs::write(file(&sha), b"damaged later").unwrap();
    let cached = blobs.open(&BlobKey::sha256(&sha), None).await.unwrap();
    assert_eq!(collect(cached).await, payload);
}

macro_rules! blob_conformance {
    ($($test:ident),* $(,)?) => {
        mod local_blobs {
            $( #[tokio::test] async fn $test() { let (blobs, _dir) = super::local_blobs(); super::$test(blobs).await } )*
        }
        mod s3_blobs {
            $( #[tokio::test] async fn $test() { let (blobs, _dir) = super::s3_blobs(); super::$test(blobs).await } )*
        }
    };
}

blob_conformance!(
    uploads_stream_in_and_promote_to_their_content_address,
    abandoned_uploads_are_discarded,
    attestations_round_trip,
    small_blobs_read_the_same_cold_and_cached,
);
