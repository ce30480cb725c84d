#!/usr/bin/env python3
"""Module-level import cycles of a crate (usage: scripts/import-cycles.py CRATE/src): each file is a node (its module path); an edge goes
to every module it names through `crate::a::b` or `super::x` (resolved to the longest existing
module). Prints strongly connected components with more than one module."""
import os, re, sys
from collections import defaultdict

src = sys.argv[1]
mods = {}
for root, _, files in os.walk(src):
    for f in files:
        if not f.endswith('.rs'):
            continue
        p = os.path.join(root, f)
        rel = os.path.relpath(p, src)[:-3].split(os.sep)
        if rel[-1] in ('mod', 'lib', 'main'):
            rel = rel[:-1]
        mods[tuple(rel)] = p

def resolve(path):
    # longest prefix that is a module
    for n in range(len(path), -1, -1):
        if tuple(path[:n]) in mods:
            return tuple(path[:n])
    return ()

edges = defaultdict(set)
for m, p in mods.items():
    text = open(p).read()
    text = re.sub(r'//[^\n]*', '', text)
    # drop test modules: cfg(test) blocks are not part of the production graph
    text = re.split(r'#\[cfg\(test\)\]\s*mod tests\s*\{', text)[0]
    if os.path.basename(p) == 'tests.rs':
        continue
    for mm in re.finditer(r'\b(crate|super)((?:::[a-z_][a-z0-9_]*)+)', text):
        parts = mm.group(2).split('::')[1:]
        if mm.group(1) == 'crate':
            base = []
        else:
            is_dir_mod = os.path.basename(p) in ('mod.rs', 'lib.rs')
            base = list(m) if is_dir_mod else list(m[:-1])
            base = base[:-1] if is_dir_mod else base
            base = list(m[:-1])
        target = resolve(base + parts)
        # also handle `use crate::{a, b}` groups
        if target != m and not (len(target) < len(m) and m[:len(target)] == target):
            edges[m].add(target)
    for mm in re.finditer(r'\b(crate|super)::\{([^}]*)\}', text):
        base = [] if mm.group(1) == 'crate' else list(m[:-1])
        for item in mm.group(2).split(','):
            item = item.strip().split('::')
            if not item[0] or not re.match(r'[a-z_]', item[0]):
                continue
            target = resolve(base + item)
            if target != m and not (len(target) < len(m) and m[:len(target)] == target):
                edges[m].add(target)

# Tarjan
index = {}; low = {}; stack = []; on = set(); sccs = []; i = [0]
def strong(v):
    index[v] = low[v] = i[0]; i[0] += 1; stack.append(v); on.add(v)
    for w in edges.get(v, ()):
        if w not in index:
            strong(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v: break
        sccs.append(comp)
sys.setrecursionlimit(10000)
for v in list(mods):
    if v not in index:
        strong(v)
bad = [c for c in sccs if len(c) > 1]
for c in bad:
    names = sorted('::'.join(x) or 'crate' for x in c)
    print('cycle:', ', '.join(names))
    for a in c:
        for b in edges[a]:
            if b in c:
                print('   ', '::'.join(a) or 'crate', '->', '::'.join(b) or 'crate')
if not bad:
    print('no cycles')
