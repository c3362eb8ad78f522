#!/usr/bin/env python3
"""Import circles between the files of a Rust module tree (default: engine/src/coordinator).

An edge A -> B means file A names an item of file B: a `use` of B's module, or a call of a
method defined in B on the same type (`impl Coordinator` methods spread over files count:
calling one from another file depends on that file). Prints every strongly connected
group of more than one file, which is what "an import circle" means here.

    python3 scripts/import_circles.py [ROOT]
"""
import os
import re
import sys
from collections import defaultdict

root = sys.argv[1] if len(sys.argv) > 1 else "engine/src/coordinator"
files = {}
for dirpath, _, names in os.walk(root):
    for name in names:
        if name.endswith(".rs"):
            path = os.path.join(dirpath, name)
            files[os.path.relpath(path, root)] = open(path).read()


def module_of(rel):
    """coordinator-relative module path of a file: 'flight/mod.rs' -> 'flight'."""
    parts = rel[:-3].split("/")
    if parts[-1] == "mod":
        parts = parts[:-1]
    return "/".join(parts)


modules = {module_of(rel): rel for rel in files}

# Methods each file defines, per implemented type.
defined = defaultdict(set)  # rel -> {(type, method)}
for rel, text in files.items():
    for impl in re.finditer(r"^impl(?:<[^>]*>)?\s+(?:[\w:]+\s+for\s+)?(\w+)[^{]*\{", text, re.M):
        ty = impl.group(1)
        depth, i = 1, impl.end()
        while depth and i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        body = text[impl.end():i]
        for m in re.finditer(r"^\s{4}(?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?fn\s+(\w+)", body, re.M):
            defined[rel].add((ty, m.group(1)))

owner = defaultdict(set)  # method name -> files defining it (methods of any type)
for rel, methods in defined.items():
    for _, name in methods:
        owner[name].add(rel)

edges = defaultdict(set)
for rel, text in files.items():
    here = module_of(rel)
    parent = "/".join(here.split("/")[:-1])
    for m in re.finditer(r"\bsuper::(\w+)|crate::coordinator::(\w+)", text):
        name = m.group(1) or m.group(2)
        base = parent if m.group(1) else ""
        target = f"{base}/{name}".strip("/")
        if target in modules and modules[target] != rel:
            edges[rel].add(modules[target])
    # `use super::{a, b}` lists
    for m in re.finditer(r"use super::\{([^}]*)\}", text):
        for name in re.findall(r"\b(\w+)\b", m.group(1)):
            target = f"{parent}/{name}".strip("/")
            if target in modules and modules[target] != rel:
                edges[rel].add(modules[target])
    # Calls of a method that another file defines on the same type: the receiver is the
    # type's value (`self`, or a variable conventionally holding it, like `coordinator`).
    for m in re.finditer(r"\b(self|coordinator|c|self\.coordinator|state\.coordinator)\s*\.(\w+)\s*\(", text):
        for target in owner.get(m.group(2), ()):
            types_here = {ty for ty, _ in defined[rel]}
            types_there = {ty for ty, name in defined[target] if name == m.group(2)}
            receiver_is_coordinator = m.group(1) != "self" or "Coordinator" in types_here
            if target != rel and receiver_is_coordinator and "Coordinator" in types_there:
                edges[rel].add(target)

# Tarjan's strongly connected components.
index, low, stack, on, groups, counter = {}, {}, [], set(), [], [0]


def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in sorted(edges[v]):
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
            groups.append(sorted(group))


sys.setrecursionlimit(10000)
for v in sorted(files):
    if v not in index:
        visit(v)
if not groups:
    print(f"{root}: no import circles ({len(files)} files)")
for g in groups:
    cycle_edges = [f"{a} -> {b}" for a in g for b in sorted(edges[a]) if b in g]
    print(f"circle of {len(g)} files: {', '.join(g)}")
    for e in cycle_edges:
        print(f"    {e}")
sys.exit(1 if groups else 0)
