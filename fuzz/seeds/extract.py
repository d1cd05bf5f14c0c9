#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ from the conformance cases, the
README and the hand-written seeds beside this script. Run from the repository root:
    python3 fuzz/seeds/extract.py
Seed files are named by the SHA-1 of their content (as libFuzzer names corpus entries), so
re-running adds only what is new."""

import glob
import hashlib
import json
import os
import re
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
SEEDS = os.path.join(ROOT, "fuzz", "seeds")


def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


def fill(v):
    """Replaces the cases' ${variables} with plausible values."""
    if isinstance(v, str):
        return re.sub(r"\$\{[^}]*\}", "2819c223-7f76-453a-919d-413861904646", v)
    if isinstance(v, list):
        return [fill(x) for x in v]
    if isinstance(v, dict):
        return {k: fill(x) for k, x in v.items()}
    return v


def from_cases():
    for path in sorted(glob.glob(os.path.join(ROOT, "conformance", "cases", "scim", "*.json"))):
        for case in json.load(open(path)):
            for step in case.get("steps", []):
                req = step.get("request", {})
                method, url, body = req.get("method"), req.get("path", ""), fill(req.get("body"))
                query = urllib.parse.urlparse(url).query
                for k, v in urllib.parse.parse_qsl(query):
                    if k == "filter":
                        put("filter", fill(v))
                if isinstance(body, dict) and isinstance(body.get("filter"), str):
                    put("filter", body["filter"])
                if body is None:
                    continue
                text = json.dumps(body)
                if url.startswith("/Bulk"):
                    put("bulk", text)
                    for op in body.get("Operations", []) if isinstance(body, dict) else []:
                        data = op.get("data") if isinstance(op, dict) else None
                        if isinstance(data, dict) and op.get("method", "").upper() in ("POST", "PUT"):
                            put("normalize", json.dumps(data))
                        if isinstance(data, dict) and op.get("method", "").upper() == "PATCH":
                            put("patch", json.dumps(data))
                elif method == "PATCH":
                    put("patch", text)
                elif method in ("POST", "PUT") and ("/Users" in url or "/Groups" in url) and ".search" not in url:
                    put("normalize", text)


def from_readme():
    readme = open(os.path.join(ROOT, "README.md")).read()
    for m in re.finditer(r"filter=([^&'\" ]+)", readme):
        put("filter", urllib.parse.unquote_plus(m.group(1)))


def from_seed_files():
    """fuzz/seeds/<target>/* are hand-written; one seed per file."""
    for d in sorted(glob.glob(os.path.join(SEEDS, "*"))):
        if not os.path.isdir(d):
            continue
        target = os.path.basename(d)
        for f in sorted(glob.glob(os.path.join(d, "*"))):
            put(target, open(f, "rb").read())


def filters_from_list():
    """fuzz/seeds/filters.txt: one filter per line."""
    for line in open(os.path.join(SEEDS, "filters.txt")):
        line = line.rstrip("\n")
        if line and not line.startswith("#"):
            put("filter", line)


if __name__ == "__main__":
    from_cases()
    from_readme()
    filters_from_list()
    from_seed_files()
