"""Verifies a Reliquary slot signature with nothing but the registry's well-known document,
using the `cryptography` package: proof that the format is interoperable, not just
self-consistent.

usage: verify_slot.py WELL_KNOWN.json JWS TARBALL ID ARCH
Exits 0 when the signature verifies and speaks about exactly these bytes, 1 otherwise.
"""
import base64
import hashlib
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def b64url(segment: str) -> bytes:
    if "=" in segment:
        raise ValueError("padded base64url")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def main() -> int:
    well_known_path, jws, tarball_path, artefact_id, arch = sys.argv[1:6]
    with open(well_known_path) as f:
        well_known = json.load(f)
    keys = {k["kid"]: k for k in well_known["keys"] if k["kty"] == "OKP" and k["crv"] == "Ed25519"}

    header_b64, payload_b64, signature_b64 = jws.split(".")
    header = json.loads(b64url(header_b64))
    if header.get("alg") != "EdDSA" or header.get("kid") not in keys:
        print(f"refused header {header}")
        return 1
    public_key = Ed25519PublicKey.from_public_bytes(b64url(keys[header["kid"]]["x"]))
    try:
        public_key.verify(b64url(signature_b64), f"{header_b64}.{payload_b64}".encode())
    except InvalidSignature:
        print("bad signature")
        return 1

    payload_bytes = b64url(payload_b64)
    payload = json.loads(payload_bytes)
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    if canonical != payload_bytes:
        print("payload is not canonical JSON")
        return 1

    with open(tarball_path, "rb") as f:
        data = f.read()
    received = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "id": artefact_id,
        "architecture": arch,
        "registry": well_known["registry"],
    }
    for field, value in received.items():
        if payload[field] != value:
            print(f"{field}: signed {payload[field]!r}, received {value!r}")
            return 1
    print(f"verified {artefact_id} [{arch}] {payload['version']} with key {header['kid']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
