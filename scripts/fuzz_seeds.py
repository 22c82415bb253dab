"""Seed corpora for the fuzz targets: real npm-pack-shaped tarballs, hostile ones, manifests
and a valid JWS signed with the fuzz target's fixed key."""
import base64
import gzip
import io
import json
import os
import sys
import tarfile

out = sys.argv[1]
for target in ("manifest", "tarball", "jws", "range"):
    os.makedirs(os.path.join(out, target), exist_ok=True)


def tgz(entries):
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb") as gz, tarfile.open(fileobj=gz, mode="w|") as tar:
        for name, data, kind, link in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = link
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


manifest = json.dumps({"name": "acme", "version": "1.0.0", "license": "MIT"}).encode()
seeds = {
    "npm": [("package/package.json", manifest, tarfile.REGTYPE, ""), ("package/index.js", b"1", tarfile.REGTYPE, "")],
    "traversal": [("package/package.json", manifest, tarfile.REGTYPE, ""), ("../x", b"1", tarfile.REGTYPE, "")],
    "symlink": [("package/package.json", manifest, tarfile.REGTYPE, ""), ("package/l", b"", tarfile.SYMTYPE, "/etc/passwd")],
    "hardlink": [("package/package.json", manifest, tarfile.REGTYPE, ""), ("package/h", b"", tarfile.LNKTYPE, "package/package.json")],
}
for name, entries in seeds.items():
    with open(os.path.join(out, "tarball", name), "wb") as f:
        f.write(tgz(entries))
for name, text in {"valid": manifest, "dup": b'{"name":"a","name":"b","version":"1.0.0"}',
                   "nested": b'{"a":[{"b":{"c":[1,2.5e10,"\\u00e9"]}}]}'}.items():
    with open(os.path.join(out, "manifest", name), "wb") as f:
        f.write(text)
# A JWS shape (the signature is not valid for the fixed key; the fuzzer mutates from here).
header = base64.urlsafe_b64encode(b'{"alg":"EdDSA","kid":"x"}').rstrip(b"=")
payload = base64.urlsafe_b64encode(b'{"architecture":"x64","id":"a@1"}').rstrip(b"=")
with open(os.path.join(out, "jws", "shape"), "wb") as f:
    f.write(header + b"." + payload + b"." + b"A" * 86)

# Range headers after an 8-byte blob size (the target decodes `(u64, &[u8])` with `arbitrary`,
# which reads the size first and gives the rest as the header).
for i, header in enumerate([b"bytes=0-", b"bytes=1-18446744073709551615", b"bytes=-5",
                            b"bytes=18446744073709551615-", b"bytes=0-1,3-4", b"bytes=5-2"]):
    with open(os.path.join(out, "range", f"seed{i}"), "wb") as f:
        f.write((1000).to_bytes(8, "little") + header)
