//! The JWS verifier: any string verifies only if signed by the trusted key, never panics.
#![no_main]
use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use reliquary_client::jws::TrustedKeys;

fuzz_target!(|data: &[u8]| {
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let trusted = TrustedKeys::new([key.verifying_key()]);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(payload) = trusted.verify(text) {
            // Whatever verifies must be canonical and re-sign to the same payload bytes.
            let again = reliquary_client::jws::sign(&key, &payload);
            assert_eq!(again.split('.').nth(1), text.split('.').nth(1));
        }
    }
});
