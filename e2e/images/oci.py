#!/usr/bin/env python3
"""Write an OCI image layout tar (oci-layout, index.json, blobs/sha256/*) with one gzip layer.

    oci.py OUT.tar --name docker.io/magictunnel/operator --tag 0.1.0 [--tag e2e] \
        --entrypoint /usr/local/bin/x --user 65532:65532 --file SRC:DEST[:MODE] ...

Every file is owned by root, mtime 0, so the same inputs give the same digests. Parent
directories are added (0755). No Docker involved: the digests are sha256 of the bytes written.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import tarfile


def layer(files):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = set()
        for _, dest, _ in files:
            parts = dest.strip("/").split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/".join(parts[:i]))
        for d in sorted(dirs):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for src, dest, mode in sorted(files, key=lambda f: f[1]):
            with open(src, "rb") as f:
                data = f.read()
            info = tarfile.TarInfo(dest.strip("/"))
            info.size = len(data)
            info.mode = mode
            tar.addfile(info, io.BytesIO(data))
    uncompressed = raw.getvalue()
    compressed = gzip.compress(uncompressed, compresslevel=9, mtime=0)
    return uncompressed, compressed


def blob(blobs, data, media_type):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--name", required=True)
    p.add_argument("--tag", action="append", required=True)
    p.add_argument("--entrypoint", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--file", action="append", required=True, help="SRC:DEST[:OCTAL_MODE]")
    a = p.parse_args()

    files = []
    for spec in a.file:
        parts = spec.split(":")
        mode = int(parts[2], 8) if len(parts) > 2 else 0o755
        files.append((parts[0], parts[1], mode))
    uncompressed, compressed = layer(files)
    diff_id = "sha256:" + hashlib.sha256(uncompressed).hexdigest()

    blobs = {}
    layer_desc = blob(blobs, compressed, "application/vnd.oci.image.layer.v1.tar+gzip")
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": a.user,
            "Entrypoint": [a.entrypoint],
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "e2e/images/oci.py", "created": "1970-01-01T00:00:00Z"}],
        "created": "1970-01-01T00:00:00Z",
    }
    config_desc = blob(blobs, json.dumps(config, sort_keys=True).encode(),
                       "application/vnd.oci.image.config.v1+json")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [layer_desc],
    }
    manifest_desc = blob(blobs, json.dumps(manifest, sort_keys=True).encode(), manifest["mediaType"])
    manifest_desc["platform"] = {"architecture": "amd64", "os": "linux"}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}
    for tag in a.tag:
        d = dict(manifest_desc)
        d["annotations"] = {
            "io.containerd.image.name": f"{a.name}:{tag}",
            "org.opencontainers.image.ref.name": tag,
        }
        index["manifests"].append(d)

    with tarfile.open(a.out, "w", format=tarfile.PAX_FORMAT) as tar:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
        add("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        add("index.json", json.dumps(index, sort_keys=True).encode())
        for digest, data in sorted(blobs.items()):
            add("blobs/sha256/" + digest.split(":")[1], data)
    print(json.dumps({"image": f"{a.name}", "tags": a.tag, "manifest": manifest_desc["digest"],
                      "uncompressed": len(uncompressed), "compressed": len(compressed)}))


if __name__ == "__main__":
    main()
