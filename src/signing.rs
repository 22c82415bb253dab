//! The registry's Ed25519 signing keys: loaded from `--signing-key` files or generated once into
//! the data dir, and the signature every slot carries.

use std::path::{Path, PathBuf};

use anyhow::Context;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use rand::rngs::OsRng;
use reliquary_client::jws::{self, jwk_for, SigningPayload};
use reliquary_client::types::{Artefact, Kind, Timestamp, WellKnown};

use crate::secrets::write_private_file;

/// The current signing key plus every key still published for verification.
pub struct Signer {
    registry: String,
    current: SigningKey,
    published: Vec<VerifyingKey>,
}

/// The file a generated key is kept in.
pub const GENERATED_KEY_FILE: &str = "signing-key.pem";

impl Signer {
    /// Loads `files` (the first signs, all are published), or with none the data dir's generated
    /// key, creating it on first start.
    pub fn load(registry: &str, files: &[PathBuf], data_dir: &Path) -> anyhow::Result<Self> {
        let keys = if files.is_empty() {
            vec![load_or_generate(&data_dir.join(GENERATED_KEY_FILE))?]
        } else {
            files
                .iter()
                .map(|f| load_key(f))
                .collect::<anyhow::Result<Vec<_>>>()?
        };
        let current = keys[0].clone();
        Ok(Self {
            registry: registry.to_owned(),
            published: keys.iter().map(SigningKey::verifying_key).collect(),
            current,
        })
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Signs what this registry observed for one slot.
    pub fn sign_slot(&self, slot: SlotFacts<'_>) -> String {
        let payload = SigningPayload {
            architecture: slot.architecture.to_owned(),
            id: slot.id.to_owned(),
            kind: slot.kind,
            package_name: slot.package_name.to_owned(),
            registry: self.registry.clone(),
            sha256: slot.sha256.to_owned(),
            signed_at: slot.signed_at,
            size: slot.size,
            version: slot.version.to_owned(),
        };
        jws::sign(&self.current, &payload)
    }

    /// `GET /.well-known/reliquary`.
    pub fn well_known(&self) -> WellKnown {
        WellKnown {
            registry: self.registry.clone(),
            api_version: 1,
            keys: self.published.iter().map(jwk_for).collect(),
            mirrored_keys: Vec::new(),
        }
    }

    pub fn trusted_keys(&self) -> jws::TrustedKeys {
        jws::TrustedKeys::new(self.published.iter().copied())
    }
}

/// The facts of a slot that go into its signature.
#[derive(Clone, Copy, Debug)]
pub struct SlotFacts<'a> {
    pub id: &'a str,
    pub architecture: &'a str,
    pub kind: Kind,
    pub package_name: &'a str,
    pub sha256: &'a str,
    pub size: u64,
    pub version: &'a str,
    pub signed_at: Timestamp,
}

impl<'a> SlotFacts<'a> {
    pub fn of(doc: &'a Artefact, architecture: &'a str) -> Option<Self> {
        let slot = doc.tarballs.get(architecture)?;
        Some(Self {
            id: &doc.id,
            architecture,
            kind: doc.kind,
            package_name: &doc.package_name,
            sha256: &slot.sha256,
            size: slot.size,
            version: &slot.version,
            signed_at: slot.uploaded_at,
        })
    }
}

/// Writes a fresh key to `path` (PKCS#8 PEM, mode 0600). Used on first start and for rotation.
pub fn generate_key_file(path: &Path) -> anyhow::Result<SigningKey> {
    let key = SigningKey::generate(&mut OsRng);
    let pem = key
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .context("encoding the signing key")?;
    write_private_file(path, pem.as_bytes())?;
    Ok(key)
}

fn load_or_generate(path: &Path) -> anyhow::Result<SigningKey> {
    if path.exists() {
        load_key(path)
    } else {
        let key = generate_key_file(path)?;
        tracing::info!(path = %path.display(), kid = %jws::kid_for(&key.verifying_key()), "generated the registry signing key");
        Ok(key)
    }
}

fn load_key(path: &Path) -> anyhow::Result<SigningKey> {
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("reading the signing key {}", path.display()))?;
    SigningKey::from_pkcs8_pem(&pem)
        .with_context(|| format!("{} is not a PKCS#8 PEM Ed25519 key", path.display()))
}
