#!/usr/bin/env python3
"""Import circles between the modules of each workspace crate.

Every source file is a module (`a/b.rs` and `a/b/mod.rs` are `a::b`). A file depends on each
module its `crate::`, `super::` and `self::` paths name (the longest module prefix of the
path; a path naming an item of a parent's own file depends on that parent). Declaring a child
(`mod x;`, `pub use x::...` re-exports of one's own children) is not a use. Prints every
strongly connected component of two or more modules and exits 1 if there is one.
"""
import os, re, sys

def modules(src):
    mods = {}
    for dp, _, fs in os.walk(src):
        for f in fs:
            if not f.endswith('.rs'):
                continue
            rel = os.path.relpath(os.path.join(dp, f), src)[:-3].split(os.sep)
            if rel[-1] in ('mod', 'lib', 'main'):
                rel = rel[:-1]
            mods[tuple(rel)] = os.path.join(dp, f)
    return mods

PATH = re.compile(r'\b(crate|super|self)((?:::\w+)+)')
USE_GROUP = re.compile(r'\buse\s+(crate|super|self)((?:::\w+)*)::\{([^;]*)\};', re.S)

TOKENS = re.compile(r'"(?:\\.|[^"\\])*"|//[^\n]*|/\*.*?\*/', re.S)


def strip(text):
    """The code without comments (docs name modules too) and string contents."""
    return TOKENS.sub(lambda t: '""' if t.group(0).startswith('"') else '', text)

def resolve(mod, kind, parts, mods):
    if kind == 'crate':
        base = ()
    elif kind == 'self':
        base = mod
    else:
        base = mod[:-1]
    path = base + tuple(parts)
    while path and path not in mods:
        path = path[:-1]
    return path

def edges(mods):
    out = {m: set() for m in mods}
    for m, f in mods.items():
        text = strip(open(f).read())
        paths = []
        for g in USE_GROUP.finditer(text):
            prefix = [p for p in g.group(2).split('::') if p]
            for item in re.split(r',', g.group(3)):
                item = item.strip().split(' as ')[0]
                if item:
                    paths.append((g.group(1), prefix + [p for p in item.split('::') if p and p != '{']))
        text = USE_GROUP.sub('', text)
        for p in PATH.finditer(text):
            paths.append((p.group(1), [x for x in p.group(2).split('::') if x]))
        for kind, parts in paths:
            # `super::super::x`
            base = m
            while parts and parts[0] == 'super':
                parts = parts[1:]
                base = base[:-1]
            if kind == 'super':
                target = resolve(base, kind, parts, mods)
            else:
                target = resolve(m, kind, parts, mods)
            # a module naming its own descendants declares or re-exports them: not a use back
            if target != m and target[:len(m)] != m:
                out[m].add(target)
            elif target != m and kind == 'crate':
                out[m].add(target)
    return out

def sccs(graph):
    index, low, stack, on, comps, n = {}, {}, [], set(), [], [0]
    def visit(v):
        index[v] = low[v] = n[0]; n[0] += 1; stack.append(v); on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v:
                    break
            comps.append(comp)
    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return [c for c in comps if len(c) > 1]

def main(roots):
    bad = 0
    for src in roots:
        mods = modules(src)
        for comp in sccs(edges(mods)):
            bad += 1
            names = sorted('::'.join(c) or 'crate' for c in comp)
            print(f'{src}: circle of {len(comp)}: ' + ' <-> '.join(names))
    print(f'{bad} import circle(s) in {len(roots)} crate(s)')
    return 1 if bad else 0

if __name__ == '__main__':
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    crates = sys.argv[1:] or [os.path.join(root, 'src')] + sorted(
        os.path.join(root, 'crates', c, 'src') for c in os.listdir(os.path.join(root, 'crates')))
    sys.exit(main(crates))
