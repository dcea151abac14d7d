#!/usr/bin/env python3
"""Deterministic test-data generator for bench/engine.sh.

  gen.py image PATH --size N --data N --extent N --seed S
      Create a sparse file of N bytes holding --data bytes of pseudo-random data in --extent-sized
      extents at distinct random extent-aligned offsets.
  gen.py writes PATH --count N --block N --seed S --ranges OUT.json
      Write --count random --block-sized blocks at random block-aligned offsets of PATH and write
      the ranges file (architecture §3 format: sorted, one entry per distinct block).

The bytes come from AES-128-CTR over zeros (openssl) keyed by the seed: incompressible, the same
on every run, and fast (a pure-Python generator would take longer than the backups).
"""
import argparse, hashlib, json, os, random, subprocess, sys

def size_arg(s):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    s = s.strip().upper().removesuffix("IB").removesuffix("B")
    return int(s[:-1]) * mult[s[-1]] if s[-1] in mult else int(s)

def stream(seed, tag):
    key = hashlib.sha256(f"{seed}/{tag}".encode()).hexdigest()
    return subprocess.Popen(
        ["openssl", "enc", "-aes-128-ctr", "-nosalt", "-K", key[:32], "-iv", key[32:64]],
        stdin=open("/dev/zero", "rb"), stdout=subprocess.PIPE, bufsize=0)

def read_exact(f, n):
    buf = bytearray()
    while len(buf) < n:
        b = f.read(n - len(buf))
        if not b:
            sys.exit("generator stream ended early")
        buf += b
    return bytes(buf)

def cmd_image(a):
    size, data, ext = size_arg(a.size), size_arg(a.data), size_arg(a.extent)
    n_slots, n_ext = size // ext, data // ext
    rng = random.Random(a.seed)
    offsets = sorted(rng.sample(range(n_slots), n_ext))
    gen = stream(a.seed, "image")
    fd = os.open(a.path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
    os.ftruncate(fd, size)
    for slot in offsets:
        os.pwrite(fd, read_exact(gen.stdout, ext), slot * ext)
    os.fsync(fd)
    os.close(fd)
    gen.kill()
    gen.wait()

def cmd_writes(a):
    block = size_arg(a.block)
    size = os.path.getsize(a.path)
    rng = random.Random(a.seed)
    blocks = [rng.randrange(size // block) for _ in range(a.count)]
    gen = stream(a.seed, "writes")
    fd = os.open(a.path, os.O_WRONLY)
    for b in blocks:
        os.pwrite(fd, read_exact(gen.stdout, block), b * block)
    os.fsync(fd)
    os.close(fd)
    gen.kill()
    gen.wait()
    uniq = sorted(set(blocks))
    doc = {"blockMetadataType": "FIXED_LENGTH", "volumeCapacityBytes": size,
           "blockMetadata": [{"byteOffset": b * block, "sizeBytes": block} for b in uniq]}
    with open(a.ranges, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
    print(f"{a.count} writes, {len(uniq)} distinct {block}-byte blocks", file=sys.stderr)

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
sub = p.add_subparsers(dest="cmd", required=True)
i = sub.add_parser("image")
i.add_argument("path"); i.add_argument("--size", required=True); i.add_argument("--data", required=True)
i.add_argument("--extent", default="1M"); i.add_argument("--seed", type=int, default=1)
w = sub.add_parser("writes")
w.add_argument("path"); w.add_argument("--count", type=int, default=2000); w.add_argument("--block", default="4K")
w.add_argument("--seed", type=int, default=2); w.add_argument("--ranges", required=True)
a = p.parse_args()
{"image": cmd_image, "writes": cmd_writes}[a.cmd](a)
