#!/usr/bin/env python3
"""Import circles between the modules of a Rust module tree (default: engine/src/coordinator).

A file depends on another when it names one of its items: a `use` or path of its module
(`super::x`, `crate::coordinator::x`, `super::Item` for the parent's items, `child::f` for a
child's), or a call of a method the other file defines on a type (`self.m()` in an `impl T`,
`field.m()` or `self.field.m()` where the field holds a `T`, `coordinator.m()`), which is
how an `impl` spread over files ties them together.

Circles are looked for among siblings: at each folder, between its files and subfolders
(a subfolder counts as one unit with everything under it, and the folder's own `mod.rs`
stands for the folder itself, one level up). Prints each circle with its edges; exits 1
if there is any.

    python3 scripts/import_circles.py [ROOT] [--edges]
"""
import os
import re
import sys
from collections import defaultdict

args = [a for a in sys.argv[1:] if not a.startswith("--")]
root = args[0] if args else "engine/src/coordinator"
files = {}
for dirpath, _, names in os.walk(root):
    for name in names:
        if name.endswith(".rs"):
            path = os.path.join(dirpath, name)
            files[os.path.relpath(path, root)] = open(path).read()


def module_of(rel):
    """root-relative module path of a file: 'flight/mod.rs' -> 'flight', 'mod.rs' -> ''."""
    parts = rel[:-3].split("/")
    if parts[-1] == "mod":
        parts = parts[:-1]
    return "/".join(parts)


modules = {module_of(rel): rel for rel in files}
# The module path of ROOT inside its crate (`coordinator` for engine/src/coordinator), so
# `crate::...` paths resolve.
crate_prefix = os.path.normpath(root).split(os.sep + "src")[-1].strip(os.sep).replace(os.sep, "::")


def block_end(text, start):
    depth, i = 1, start
    while depth and i < len(text):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return i


# Methods each file defines, per implemented type; the types each file implements.
defined = defaultdict(set)  # rel -> {(type, method)}
for rel, text in files.items():
    for impl in re.finditer(r"^impl(?:<[^>]*>)?\s+(?:[\w:]+\s+for\s+)?(\w+)[^{;]*\{", text, re.M):
        body = text[impl.end():block_end(text, impl.end())]
        for m in re.finditer(r"^ {4}(?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?fn\s+(\w+)", body, re.M):
            defined[rel].add((impl.group(1), m.group(1)))
where = defaultdict(set)  # (type, method) -> files
for rel, methods in defined.items():
    for key in methods:
        where[key].add(rel)
types = {ty for (ty, _) in where}

# Field and variable names that hold a value of one of those types.
holders = {"coordinator": "Coordinator", "c": "Coordinator"}
for text in files.values():
    for m in re.finditer(r"\b(\w+):\s*(?:Arc<|&)?(\w+)>?", text):
        if m.group(2) in types:
            holders.setdefault(m.group(1), m.group(2))

edges = defaultdict(set)


def add(rel, target):
    if target is not None and target != rel:
        edges[rel].add(target)


for rel, text in files.items():
    here = module_of(rel)
    parent = "/".join(here.split("/")[:-1]) if here else None
    implemented = {ty for ty, _ in defined[rel]}
    if parent is not None:
        for m in re.finditer(r"\bsuper::(\{[^}]*\}|\w+)", text):
            for name in re.findall(r"\b(\w+)\b", m.group(1)):
                target = f"{parent}/{name}".strip("/")
                add(rel, modules.get(target, modules.get(parent)))
    for m in re.finditer(r"\bcrate::((?:\w+::)*\w+)", text):
        path = m.group(1)
        if crate_prefix:
            if not path.startswith(crate_prefix + "::"):
                continue
            path = path[len(crate_prefix) + 2:]
        parts = path.split("::")
        # the longest module prefix of the path
        for n in range(len(parts), -1, -1):
            target = "/".join(parts[:n])
            if target in modules:
                add(rel, modules[target])
                break
    # A parent naming its children (`child::item`, `use child::...`).
    for m in re.finditer(r"(?<![\w:])(\w+)::", text):
        target = f"{here}/{m.group(1)}".strip("/")
        if target in modules:
            add(rel, modules[target])
    for m in re.finditer(r"\b(self|\w+)((?:\s*\.\s*\w+)?)\s*\.\s*(\w+)\s*\(", text):
        receiver, field, method = m.group(1), m.group(2).strip(" .\n"), m.group(3)
        if receiver == "self" and not field:
            candidates = implemented
        else:
            candidates = {holders.get(field or receiver)} - {None}
        for ty in candidates:
            for target in where.get((ty, method), ()):
                add(rel, target)


def unit_of(rel, level):
    """The entry of folder `level` that contains file `rel`, or None if outside it."""
    prefix = f"{level}/" if level else ""
    if not rel.startswith(prefix):
        return None
    rest = rel[len(prefix):]
    if rest == "mod.rs":
        return None
    return rest.split("/")[0]


levels = {os.path.dirname(rel) for rel in files}
circles = []
for level in sorted(levels):
    graph = defaultdict(set)
    for a, targets in edges.items():
        ua = unit_of(a, level)
        for b in targets:
            ub = unit_of(b, level)
            if ua and ub and ua != ub:
                graph[ua].add(ub)
    index, low, stack, on, counter = {}, {}, [], set(), [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                circles.append((level, sorted(group), graph))

    for v in sorted(graph):
        if v not in index:
            visit(v)

if "--edges" in sys.argv:
    for v in sorted(edges):
        print(f"{v} -> {', '.join(sorted(edges[v]))}")
for level, group, graph in circles:
    where_ = f"{root}/{level}".rstrip("/")
    print(f"circle in {where_}: {', '.join(group)}")
    for a in group:
        for b in sorted(graph[a]):
            if b in group:
                print(f"    {a} -> {b}")
if not circles:
    print(f"{root}: no import circles ({len(files)} files)")
sys.exit(1 if circles else 0)
