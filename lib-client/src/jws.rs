//! Slot signatures: JWS compact serialization (RFC 7515) with EdDSA over the RFC 8785 canonical
//! JSON of a [`SigningPayload`]. Signing and verifying live together so the format has one home;
//! the registry signs, and the registry's tests, the sync worker and the client verify.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::json::{canonicalize, parse_strict};
use crate::types::{Artefact, Jwk, Kind, Timestamp};

/// What a slot signature asserts: this registry observed these bytes for this id, slot and version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SigningPayload {
    pub architecture: String,
    pub id: String,
    pub kind: Kind,
    pub package_name: String,
    pub registry: String,
    pub sha256: String,
    pub signed_at: Timestamp,
    pub size: u64,
    pub version: String,
}

impl SigningPayload {
    /// The exact bytes that are signed.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let value = serde_json::to_value(self).expect("payload is plain data");
        canonicalize(&value).into_bytes()
    }
}

/// Why a signature was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwsError {
    #[error("a JWS compact serialization has exactly three segments")]
    Segments,
    #[error("segment {0} is not strict unpadded base64url")]
    Base64(&'static str),
    #[error("the protected header is not a JSON object without duplicate keys")]
    Header,
    #[error("algorithm `{0}` is not accepted; only EdDSA is")]
    Algorithm(String),
    #[error("header member `{0}` is refused: keys come only from the trusted key set")]
    HeaderMember(String),
    #[error("no trusted key has kid `{0}`")]
    UnknownKey(String),
    #[error("the Ed25519 signature does not verify")]
    BadSignature,
    #[error("the payload is not canonical JSON of the signing payload: {0}")]
    Payload(String),
    #[error("the document has no `{0}` slot")]
    NoSlot(String),
    #[error("the signature is for {field} `{signed}`, but the registry served `{actual}`")]
    Mismatch {
        field: &'static str,
        signed: String,
        actual: String,
    },
}

/// The key id of a public key: base64url of the first 16 bytes of the sha256 of its 32 bytes.
pub fn kid_for(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..16])
}

/// The JWK of a public key as `/.well-known/reliquary` publishes it.
pub fn jwk_for(key: &VerifyingKey) -> Jwk {
    Jwk {
        kty: "OKP".into(),
        crv: "Ed25519".into(),
        x: URL_SAFE_NO_PAD.encode(key.as_bytes()),
        kid: kid_for(key),
        use_: "sig".into(),
    }
}

/// Signs `payload` with `key`, returning the JWS compact serialization.
pub fn sign(key: &SigningKey, payload: &SigningPayload) -> String {
    let header = serde_json::json!({"alg": "EdDSA", "kid": kid_for(&key.verifying_key())});
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(canonicalize(&header)),
        URL_SAFE_NO_PAD.encode(payload.canonical_bytes())
    );
    let signature = key.sign(signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    )
}

/// The public keys a verifier trusts, by kid.
#[derive(Clone, Debug, Default)]
pub struct TrustedKeys {
    keys: HashMap<String, VerifyingKey>,
}

impl TrustedKeys {
    pub fn new(keys: impl IntoIterator<Item = VerifyingKey>) -> Self {
        Self {
            keys: keys.into_iter().map(|k| (kid_for(&k), k)).collect(),
        }
    }

    /// Trusts every well-formed Ed25519 JWK; the kid is recomputed, never taken on faith.
    pub fn from_jwks<'a>(jwks: impl IntoIterator<Item = &'a Jwk>) -> Result<Self, String> {
        let mut keys = Vec::new();
        for jwk in jwks {
            if jwk.kty != "OKP" || jwk.crv != "Ed25519" {
                return Err(format!("key `{}` is not an Ed25519 OKP key", jwk.kid));
            }
            let bytes: [u8; 32] = URL_SAFE_NO_PAD
                .decode(&jwk.x)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| format!("key `{}` has a malformed `x`", jwk.kid))?;
            let key = VerifyingKey::from_bytes(&bytes)
                .map_err(|_| format!("key `{}` is not a valid Ed25519 point", jwk.kid))?;
            if kid_for(&key) != jwk.kid {
                return Err(format!("key `{}` does not match its kid", jwk.kid));
            }
            keys.push(key);
        }
        Ok(Self::new(keys))
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Verifies a slot signature and returns what it asserts. Every check happens before the
    /// payload is trusted: segment shape, header, key lookup, strict Ed25519, then the payload.
    pub fn verify(&self, jws: &str) -> Result<SigningPayload, JwsError> {
        let segments: Vec<&str> = jws.split('.').collect();
        let [header_b64, payload_b64, signature_b64] = segments[..] else {
            return Err(JwsError::Segments);
        };
        let header = decode_segment(header_b64, "header")?;
        let payload = decode_segment(payload_b64, "payload")?;
        let signature = decode_segment(signature_b64, "signature")?;

        let kid = check_header(&header)?;
        let key = self
            .keys
            .get(&kid)
            .ok_or_else(|| JwsError::UnknownKey(kid.clone()))?;
        let signature = Signature::from_slice(&signature).map_err(|_| JwsError::BadSignature)?;
        let signing_input = &jws[..header_b64.len() + 1 + payload_b64.len()];
        key.verify_strict(signing_input.as_bytes(), &signature)
            .map_err(|_| JwsError::BadSignature)?;

        let value = parse_strict(&payload).map_err(|e| JwsError::Payload(e.to_string()))?;
        if canonicalize(&value).as_bytes() != payload.as_slice() {
            return Err(JwsError::Payload("not in RFC 8785 canonical form".into()));
        }
        serde_json::from_value(value).map_err(|e| JwsError::Payload(e.to_string()))
    }
}

fn decode_segment(segment: &str, name: &'static str) -> Result<Vec<u8>, JwsError> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| JwsError::Base64(name))
}

/// Accepts only `alg: EdDSA` with a `kid`; every way of smuggling a key or an extension is refused.
fn check_header(header: &[u8]) -> Result<String, JwsError> {
    let value = parse_strict(header).map_err(|_| JwsError::Header)?;
    let object = value.as_object().ok_or(JwsError::Header)?;
    for member in object.keys() {
        if !matches!(member.as_str(), "alg" | "kid" | "typ") {
            return Err(JwsError::HeaderMember(member.clone()));
        }
    }
    match object.get("alg").and_then(|v| v.as_str()) {
        Some("EdDSA") => {}
        Some(other) => return Err(JwsError::Algorithm(other.to_owned())),
        None => return Err(JwsError::Algorithm("(missing)".into())),
    }
    object
        .get("kid")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .ok_or(JwsError::Header)
}

/// What a consumer actually received, to compare with what the signature asserts.
#[derive(Clone, Debug)]
pub struct Received<'a> {
    pub id: &'a str,
    pub architecture: &'a str,
    pub sha256: &'a str,
    pub size: u64,
}

impl SigningPayload {
    /// Fails unless the signature speaks about exactly the bytes and slot that were received.
    pub fn check_matches(&self, received: &Received<'_>) -> Result<(), JwsError> {
        let pairs = [
            ("id", self.id.as_str(), received.id.to_string()),
            (
                "architecture",
                self.architecture.as_str(),
                received.architecture.to_string(),
            ),
            ("sha256", self.sha256.as_str(), received.sha256.to_string()),
        ];
        for (field, signed, actual) in pairs {
            if signed != actual {
                return Err(JwsError::Mismatch {
                    field,
                    signed: signed.to_owned(),
                    actual,
                });
            }
        }
        if self.size != received.size {
            return Err(JwsError::Mismatch {
                field: "size",
                signed: self.size.to_string(),
                actual: received.size.to_string(),
            });
        }
        Ok(())
    }
}

/// The one slot check, shared by the sync worker, the client cache and the web UI: the slot's
/// signature verifies with `keys`, and every field it signs equals what the document says
/// (`id`, `architecture`, `kind`, `packageName`, `version`, `sha256`, `size`, and the signing
/// `registry` when the caller knows which registry must have signed). A signature that verifies
/// but speaks about another slot, kind or version is refused like a forged one.
pub fn verify_slot(
    keys: &TrustedKeys,
    doc: &Artefact,
    architecture: &str,
    registry: Option<&str>,
) -> Result<SigningPayload, JwsError> {
    let slot = doc
        .tarballs
        .get(architecture)
        .ok_or_else(|| JwsError::NoSlot(architecture.to_owned()))?;
    verify_slot_of(keys, doc, architecture, slot, registry)
}

/// [`verify_slot`] for a slot given apart from the document's current ones (a history entry):
/// its signature must verify and name this document's id, kind and package, and the slot's
/// architecture, sha256, size and version.
pub fn verify_slot_of(
    keys: &TrustedKeys,
    doc: &Artefact,
    architecture: &str,
    slot: &crate::types::Slot,
    registry: Option<&str>,
) -> Result<SigningPayload, JwsError> {
    let payload = keys.verify(&slot.signature)?;
    payload.check_matches(&Received {
        id: &doc.id,
        architecture,
        sha256: &slot.sha256,
        size: slot.size,
    })?;
    let pairs = [
        ("kind", payload.kind.as_str(), doc.kind.as_str()),
        (
            "packageName",
            payload.package_name.as_str(),
            doc.package_name.as_str(),
        ),
        ("version", payload.version.as_str(), slot.version.as_str()),
        (
            "registry",
            payload.registry.as_str(),
            registry.unwrap_or(payload.registry.as_str()),
        ),
    ];
    for (field, signed, actual) in pairs {
        if signed != actual {
            return Err(JwsError::Mismatch {
                field,
                signed: signed.to_owned(),
                actual: actual.to_owned(),
            });
        }
    }
    Ok(payload)
}
