#!/usr/bin/env python3
"""Writes a generated Rust-like source file of about SIZE_MB megabytes (default 100) to PATH."""
import sys

path = sys.argv[1] if len(sys.argv) > 1 else "/tmp/big.rs"
size_mb = float(sys.argv[2]) if len(sys.argv) > 2 else 100
out, size, i = [], 0, 0
while size < size_mb * 1024 * 1024:
    if i % 5:
        line = f"    let value_{i} = compute({i}, \"text {i}\"); // comment {i}\n"
    else:
        line = f"fn function_{i}(x: u64) -> u64 {{\n"
    out.append(line)
    size += len(line)
    i += 1
with open(path, "w") as f:
    f.write("".join(out))
print(f"{path}: {i} lines, {size} bytes")
