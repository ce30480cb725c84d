#!/usr/bin/env python3
"""Lists the import circles between the modules of one crate.

Usage: scripts/import-cycles.py CRATE/src

Each file is a module; an edge goes from it to every module it names through `crate::a::b` or
`super::x` paths (resolved to the longest module that exists), outside comments and outside an
inline `#[cfg(test)] mod tests`. Edges to a module's own ancestors are left out: a child may use
its parent's items. Prints every strongly connected component of more than one module with its
edges, or "no cycles"; exits 1 when there is a circle.
"""
import os
import re
import sys
from collections import defaultdict


def modules(src):
    found = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith('.rs'):
                continue
            path = os.path.join(root, f)
            parts = os.path.relpath(path, src)[:-3].split(os.sep)
            if parts[-1] in ('mod', 'lib', 'main'):
                parts = parts[:-1]
            found[tuple(parts)] = path
    return found


def edges_of(mods):
    def resolve(path):
        for n in range(len(path), -1, -1):
            if tuple(path[:n]) in mods:
                return tuple(path[:n])
        return ()

    edges = defaultdict(set)
    for module, path in mods.items():
        if os.path.basename(path) == 'tests.rs':
            continue
        text = re.sub(r'//[^\n]*', '', open(path).read())
        text = re.split(r'#\[cfg\(test\)\]\s*mod tests\s*\{', text)[0]
        targets = []
        for m in re.finditer(r'\b(crate|super)((?:::[a-z_][a-z0-9_]*)+)', text):
            base = [] if m.group(1) == 'crate' else list(module[:-1])
            targets.append(resolve(base + m.group(2).split('::')[1:]))
        for m in re.finditer(r'\b(crate|super)::\{([^}]*)\}', text):
            base = [] if m.group(1) == 'crate' else list(module[:-1])
            for item in m.group(2).split(','):
                item = item.strip().split('::')
                if item[0] and re.match(r'[a-z_]', item[0]):
                    targets.append(resolve(base + item))
        for target in targets:
            if target != module and module[:len(target)] != target:
                edges[module].add(target)
    return edges


def cycles(mods, edges):
    """Tarjan's strongly connected components."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def strong(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    sys.setrecursionlimit(10000)
    for v in mods:
        if v not in index:
            strong(v)
    return found


def main():
    if len(sys.argv) != 2 or not os.path.isdir(sys.argv[1]):
        sys.exit('usage: scripts/import-cycles.py CRATE/src')
    mods = modules(sys.argv[1])
    edges = edges_of(mods)
    found = cycles(mods, edges)
    name = lambda m: '::'.join(m) or 'crate'
    for component in found:
        print('cycle:', ', '.join(sorted(name(m) for m in component)))
        for a in component:
            for b in sorted(edges[a]):
                if b in component:
                    print('   ', name(a), '->', name(b))
    if not found:
        print('no cycles')
    sys.exit(1 if found else 0)


if __name__ == '__main__':
    main()
