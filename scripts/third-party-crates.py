#!/usr/bin/env python3
"""Lists the crates linked into the plugin and the tools (name, version, licence, source), from
`cargo metadata` (normal dependencies of the default features, no dev or build ones).

    third-party-crates.py OUT.txt     (run by scripts/make-deb.sh)
"""
import json
import subprocess
import sys

meta = json.loads(subprocess.run(
    ["cargo", "metadata", "--format-version", "1", "--locked", "--filter-platform", "x86_64-unknown-linux-gnu"],
    check=True, capture_output=True).stdout)
packages = {p["id"]: p for p in meta["packages"]}
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
root = meta["resolve"]["root"]
seen, todo = set(), [root]
while todo:
    node = nodes[todo.pop()]
    for dep in node["deps"]:
        if any(k["kind"] is None for k in dep["dep_kinds"]) and dep["pkg"] not in seen:
            seen.add(dep["pkg"])
            todo.append(dep["pkg"])
rows = sorted((packages[i]["name"], packages[i]["version"], packages[i].get("license") or "see its source",
               packages[i].get("repository") or "") for i in seen)
with open(sys.argv[1], "w") as out:
    out.write("Rust crates linked statically into libgstvideoai.so and the videoai tools\n")
    out.write("(name, version, licence, source); their licence texts are in their sources on crates.io.\n\n")
    for r in rows:
        out.write("%-32s %-12s %-40s %s\n" % r)
print(f"{sys.argv[1]}: {len(rows)} crates")
