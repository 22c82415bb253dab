//! Slot signatures: round trips and every rejection rule, table-driven.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use rand::rngs::OsRng;
use reliquary_client::json::canonicalize;
use reliquary_client::jws::{self, JwsError, Received, SigningPayload, TrustedKeys};
use reliquary_client::types::{Kind, Timestamp};

fn payload() -> SigningPayload {
    SigningPayload {
        architecture: "x64".into(),
        id: "acme-plugin@1".into(),
        kind: Kind::Release,
        package_name: "acme-plugin".into(),
        registry: "production".into(),
        sha256: "ab".repeat(32),
        signed_at: Timestamp::from_millis(1_700_000_000_123),
        size: 1234,
        version: "1.4.2".into(),
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A JWS with arbitrary header and payload bytes, signed with `key`.
fn forge(key: &SigningKey, header: &str, payload: &[u8]) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload));
    let signature = key.sign(input.as_bytes());
    format!("{input}.{}", b64(&signature.to_bytes()))
}

#[test]
fn a_signature_round_trips_and_its_payload_is_canonical() {
    let key = SigningKey::generate(&mut OsRng);
    let trusted = TrustedKeys::new([key.verifying_key()]);
    let jws = jws::sign(&key, &payload());
    assert_eq!(trusted.verify(&jws).unwrap(), payload());

    let segments: Vec<&str> = jws.split('.').collect();
    let header = URL_SAFE_NO_PAD.decode(segments[0]).unwrap();
    let kid = jws::kid_for(&key.verifying_key());
    assert_eq!(
        String::from_utf8(header).unwrap(),
        format!(r#"{{"alg":"EdDSA","kid":"{kid}"}}"#)
    );
    let body = String::from_utf8(URL_SAFE_NO_PAD.decode(segments[1]).unwrap()).unwrap();
    assert_eq!(
        body,
        format!(
            r#"{{"architecture":"x64","id":"acme-plugin@1","kind":"release","packageName":"acme-plugin","registry":"production","sha256":"{}","signedAt":"2023-11-14T22:13:20.123Z","size":1234,"version":"1.4.2"}}"#,
            "ab".repeat(32)
        )
    );
}

#[test]
fn every_rejection_rule() {
    let key = SigningKey::generate(&mut OsRng);
    let other = SigningKey::generate(&mut OsRng);
    let trusted = TrustedKeys::new([key.verifying_key()]);
    let kid = jws::kid_for(&key.verifying_key());
    let good_header = format!(r#"{{"alg":"EdDSA","kid":"{kid}"}}"#);
    let canonical = payload().canonical_bytes();
    let good = jws::sign(&key, &payload());
    let segments: Vec<&str> = good.split('.').collect();

    let mut tampered_payload = payload();
    tampered_payload.sha256 = "cd".repeat(32);
    let tampered = format!(
        "{}.{}.{}",
        segments[0],
        b64(&tampered_payload.canonical_bytes()),
        segments[2]
    );

    let value: serde_json::Value = serde_json::from_slice(&canonical).unwrap();
    let pretty = serde_json::to_vec_pretty(&value).unwrap();
    let text = String::from_utf8(canonical.clone()).unwrap();
    let duplicated = text.replacen("{", r#"{"architecture":"arm64","#, 1);
    let mut with_extra = value.clone();
    with_extra["extra"] = serde_json::json!(1);
    let extra = canonicalize(&with_extra);

    type Case = (&'static str, String, fn(&JwsError) -> bool);
    let cases: Vec<Case> = vec![
        (
            "two segments",
            format!("{}.{}", segments[0], segments[1]),
            |e| matches!(e, JwsError::Segments),
        ),
        ("four segments", format!("{good}.x"), |e| {
            matches!(e, JwsError::Segments)
        }),
        (
            "padded base64",
            format!(
                "{}.{}.{}",
                URL_SAFE.encode(good_header.as_bytes()) + "=",
                segments[1],
                segments[2]
            ),
            |e| matches!(e, JwsError::Base64(_)),
        ),
        (
            "standard base64 alphabet",
            format!(
                "{}.{}.{}",
                segments[0],
                segments[1],
                segments[2].replace('-', "+").replace('_', "/") + "+"
            ),
            |e| matches!(e, JwsError::Base64(_)),
        ),
        (
            "alg none",
            forge(
                &key,
                &format!(r#"{{"alg":"none","kid":"{kid}"}}"#),
                &canonical,
            ),
            |e| matches!(e, JwsError::Algorithm(a) if a == "none"),
        ),
        (
            "alg HS256",
            forge(
                &key,
                &format!(r#"{{"alg":"HS256","kid":"{kid}"}}"#),
                &canonical,
            ),
            |e| matches!(e, JwsError::Algorithm(a) if a == "HS256"),
        ),
        (
            "missing alg",
            forge(&key, &format!(r#"{{"kid":"{kid}"}}"#), &canonical),
            |e| matches!(e, JwsError::Algorithm(_)),
        ),
        (
            "unknown kid",
            forge(
                &other,
                &format!(
                    r#"{{"alg":"EdDSA","kid":"{}"}}"#,
                    jws::kid_for(&other.verifying_key())
                ),
                &canonical,
            ),
            |e| matches!(e, JwsError::UnknownKey(_)),
        ),
        (
            "embedded jwk",
            forge(
                &other,
                &format!(r#"{{"alg":"EdDSA","kid":"{kid}","jwk":{{"kty":"OKP"}}}}"#),
                &canonical,
            ),
            |e| matches!(e, JwsError::HeaderMember(m) if m == "jwk"),
        ),
        (
            "jku",
            forge(
                &key,
                &format!(r#"{{"alg":"EdDSA","jku":"http://evil","kid":"{kid}"}}"#),
                &canonical,
            ),
            |e| matches!(e, JwsError::HeaderMember(m) if m == "jku"),
        ),
        (
            "x5c",
            forge(
                &key,
                &format!(r#"{{"alg":"EdDSA","kid":"{kid}","x5c":[]}}"#),
                &canonical,
            ),
            |e| matches!(e, JwsError::HeaderMember(m) if m == "x5c"),
        ),
        (
            "crit",
            forge(
                &key,
                &format!(r#"{{"alg":"EdDSA","crit":["exp"],"kid":"{kid}"}}"#),
                &canonical,
            ),
            |e| matches!(e, JwsError::HeaderMember(m) if m == "crit"),
        ),
        (
            "duplicate header key",
            forge(
                &key,
                &format!(r#"{{"alg":"EdDSA","alg":"EdDSA","kid":"{kid}"}}"#),
                &canonical,
            ),
            |e| matches!(e, JwsError::Header),
        ),
        (
            "signed by another key under our kid",
            forge(&other, &good_header, &canonical),
            |e| matches!(e, JwsError::BadSignature),
        ),
        ("tampered payload", tampered, |e| {
            matches!(e, JwsError::BadSignature)
        }),
        (
            "truncated signature",
            format!("{}.{}.{}", segments[0], segments[1], &segments[2][..40]),
            |e| matches!(e, JwsError::BadSignature | JwsError::Base64(_)),
        ),
        (
            "non-canonical payload",
            forge(&key, &good_header, &pretty),
            |e| matches!(e, JwsError::Payload(_)),
        ),
        (
            "duplicate payload key",
            forge(&key, &good_header, duplicated.as_bytes()),
            |e| matches!(e, JwsError::Payload(_)),
        ),
        (
            "unknown payload member",
            forge(&key, &good_header, extra.as_bytes()),
            |e| matches!(e, JwsError::Payload(_)),
        ),
    ];
    assert_eq!(
        trusted.verify(&good).unwrap(),
        payload(),
        "the control case verifies"
    );
    for (name, jws, expected) in cases {
        match trusted.verify(&jws) {
            Ok(_) => panic!("{name}: accepted"),
            Err(error) => assert!(expected(&error), "{name}: wrong reason {error:?}"),
        }
    }
}

#[test]
fn the_signature_must_speak_about_what_was_received() {
    let p = payload();
    let sha = p.sha256.clone();
    let good = Received {
        id: "acme-plugin@1",
        architecture: "x64",
        sha256: &sha,
        size: 1234,
    };
    assert!(p.check_matches(&good).is_ok());
    let cases = [
        Received {
            sha256: "00",
            ..good.clone()
        },
        Received {
            size: 1235,
            ..good.clone()
        },
        Received {
            id: "acme-plugin@2",
            ..good.clone()
        },
        Received {
            architecture: "noarch",
            ..good.clone()
        },
    ];
    for received in cases {
        assert!(
            matches!(p.check_matches(&received), Err(JwsError::Mismatch { .. })),
            "{received:?}"
        );
    }
}

#[test]
fn jwks_are_checked_before_they_are_trusted() {
    let key = SigningKey::generate(&mut OsRng);
    let jwk = jws::jwk_for(&key.verifying_key());
    let trusted = TrustedKeys::from_jwks([&jwk]).unwrap();
    assert_eq!(trusted.kids().collect::<Vec<_>>(), [jwk.kid.as_str()]);
    let mut lying = jwk.clone();
    lying.kid = "someone-else".into();
    assert!(TrustedKeys::from_jwks([&lying]).is_err());
    let mut wrong_curve = jwk.clone();
    wrong_curve.crv = "X25519".into();
    assert!(TrustedKeys::from_jwks([&wrong_curve]).is_err());
    let mut short = jwk;
    short.x = "AAAA".into();
    assert!(TrustedKeys::from_jwks([&short]).is_err());
}
