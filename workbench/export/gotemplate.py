"""Ollama's TEMPLATE is a Go text/template. This module writes one from a chat-template
skeleton, and evaluates the small subset of Go-template syntax it writes, so an export can
prove (and the tests can check) that Ollama will build the same prompt string as the
tokenizer's Jinja template did in training.

The evaluator is deliberately not a Go-template engine: it knows `{{ .Field }}`,
`{{ if }} / {{ else if }} / {{ else }} / {{ end }}`, `{{ range $i, $_ := .Messages }}`, and
the functions eq, ne, and, or, not, len, slice; anything else is an error, never a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from workbench.export.chat_template import Skeleton

# How Ollama fills the template when it uses .Messages: every message (system ones too) in
# order, and .System joined from the system messages (see ollama's template.collate).
LAST = "(eq (len (slice $.Messages $i)) 1)"


def _lit(text: str) -> str:
    """Literal text with `{{` written as an action, so the template parser never sees it."""
    return text.replace("{{", '{{ "{{" }}')


def build_template(sk: Skeleton) -> str:
    system = f"{{{{ if .System }}}}{_lit(sk.system_open)}{{{{ .System }}}}{_lit(sk.system_close)}"
    system += (f"{{{{ else }}}}{_lit(sk.preamble)}{{{{ end }}}}" if sk.preamble else "{{ end }}")
    user = (f'{{{{ if eq .Role "user" }}}}{_lit(sk.user_open)}{{{{ .Content }}}}'
            f"{_lit(sk.user_close)}{{{{ if {LAST} }}}}{_lit(sk.generation_prompt)}{{{{ end }}}}")
    # A last assistant message is left open: Ollama continues it (prefill).
    assistant = (f'{{{{ else if eq .Role "assistant" }}}}{_lit(sk.assistant_open)}'
                 f"{{{{ .Content }}}}{{{{ if not {LAST} }}}}{_lit(sk.assistant_close)}"
                 f"{{{{ end }}}}{{{{ end }}}}")
    return f"{system}{{{{ range $i, $_ := .Messages }}}}{user}{assistant}{{{{ end }}}}"


def ollama_values(messages: list[dict]) -> dict:
    """The values Ollama hands a .Messages template for a chat request."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    return {"System": system, "Messages": [{"Role": m["role"], "Content": m["content"]}
                                           for m in messages]}


# ---- the evaluator ----------------------------------------------------------------------

class GoTemplateError(Exception):
    pass


@dataclass
class _Node:
    kind: str  # text | out | if | range
    value: Any = None
    branches: list = field(default_factory=list)  # if: [(cond tokens, body)], range: body
    else_body: list = field(default_factory=list)
    names: tuple = ()


_ACTION = re.compile(r"\{\{(.*?)\}\}", re.S)
_TOKEN = re.compile(r'\s*("(?:[^"\\]|\\.)*"|\(|\)|[^\s()]+)')


def _lex(expr: str) -> list[str]:
    out, pos = [], 0
    expr = expr.strip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            raise GoTemplateError(f"cannot read {expr[pos:]!r}")
        out.append(m.group(1))
        pos = m.end()
    return out


def parse(template: str) -> list[_Node]:
    pos, items = 0, []
    for m in _ACTION.finditer(template):
        if m.start() > pos:
            items.append(("text", template[pos:m.start()]))
        body = m.group(1)
        if body.startswith("-") or body.endswith("-"):
            raise GoTemplateError("whitespace trimming ({{- -}}) is outside the supported subset")
        items.append(("action", body.strip()))
        pos = m.end()
    if pos < len(template):
        items.append(("text", template[pos:]))
    nodes, rest = _parse_block(items, 0, top=True)
    return nodes


def _parse_block(items, i, top=False):
    nodes = []
    while i < len(items):
        kind, val = items[i]
        if kind == "text":
            nodes.append(_Node("text", val))
            i += 1
            continue
        word = val.split(None, 1)[0] if val else ""
        if word in ("end", "else"):
            if top:
                raise GoTemplateError(f"unexpected {{{{ {val} }}}}")
            return nodes, i
        if word == "if":
            node = _Node("if")
            cond = _lex(val[2:])
            i += 1
            while True:
                body, i = _parse_block(items, i)
                node.branches.append((cond, body))
                if i >= len(items):
                    raise GoTemplateError("{{ if }} without {{ end }}")
                stop = items[i][1]
                i += 1
                if stop == "end":
                    break
                if stop.startswith("else if "):
                    cond = _lex(stop[len("else if "):])
                    continue
                if stop == "else":
                    node.else_body, i = _parse_block(items, i)
                    if i >= len(items) or items[i][1] != "end":
                        raise GoTemplateError("{{ else }} without {{ end }}")
                    i += 1
                    break
                raise GoTemplateError(f"unexpected {{{{ {stop} }}}}")
            nodes.append(node)
        elif word == "range":
            m = re.fullmatch(r"range\s+(\$\w+)\s*,\s*(\$\w+)\s*:=\s*(.+)", val)
            if not m:
                raise GoTemplateError(f"unsupported range: {{{{ {val} }}}}")
            body, i = _parse_block(items, i + 1)
            if i >= len(items) or items[i][1] != "end":
                raise GoTemplateError("{{ range }} without {{ end }}")
            i += 1
            nodes.append(_Node("range", _lex(m.group(3)), [body], names=(m.group(1), m.group(2))))
        else:
            nodes.append(_Node("out", _lex(val)))
            i += 1
    if not top:
        raise GoTemplateError("block without {{ end }}")
    return nodes, i


def _field(obj, name: str):
    if not isinstance(obj, dict) or name not in obj:
        raise GoTemplateError(f"no field .{name}")
    return obj[name]


def _eval(tokens: list[str], dot, root, env) -> Any:
    value, rest = _eval_call(tokens, dot, root, env)
    if rest:
        raise GoTemplateError(f"unexpected {' '.join(rest)}")
    return value


def _atom(tokens, dot, root, env):
    tok, rest = tokens[0], tokens[1:]
    if tok == "(":
        depth, j = 1, 0
        while depth:
            j += 1
            if j >= len(tokens):
                raise GoTemplateError("unbalanced (")
            depth += {"(": 1, ")": -1}.get(tokens[j], 0)
        return _eval(tokens[1:j], dot, root, env), tokens[j + 1:]
    if tok.startswith('"'):
        return bytes(tok[1:-1], "utf-8").decode("unicode_escape"), rest
    if re.fullmatch(r"-?\d+", tok):
        return int(tok), rest
    if tok.startswith("$."):
        return _field(root, tok[2:]), rest
    if tok.startswith("$"):
        if tok not in env:
            raise GoTemplateError(f"undefined variable {tok}")
        return env[tok], rest
    if tok.startswith("."):
        return _field(dot, tok[1:]), rest
    raise GoTemplateError(f"unsupported word {tok!r}")


_FUNCS = {
    "eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "not": lambda a: not a,
    "and": lambda *a: all(a), "or": lambda *a: any(a), "len": len,
    "slice": lambda x, i, j=None: x[i:j],
}


def _eval_call(tokens, dot, root, env):
    if not tokens:
        raise GoTemplateError("empty expression")
    if tokens[0] in _FUNCS:
        args, rest = [], tokens[1:]
        while rest:
            v, rest = _atom(rest, dot, root, env)
            args.append(v)
        return _FUNCS[tokens[0]](*args), []
    return _atom(tokens, dot, root, env)


def _truthy(v) -> bool:
    return bool(v)


def _exec(nodes, dot, root, env, out: list[str]) -> None:
    for n in nodes:
        if n.kind == "text":
            out.append(n.value)
        elif n.kind == "out":
            out.append(str(_eval(n.value, dot, root, env)))
        elif n.kind == "if":
            for cond, body in n.branches:
                if _truthy(_eval(cond, dot, root, env)):
                    _exec(body, dot, root, env, out)
                    break
            else:
                _exec(n.else_body, dot, root, env, out)
        elif n.kind == "range":
            seq = _eval(n.value, dot, root, env)
            for i, item in enumerate(seq):
                _exec(n.branches[0], item, root, {**env, n.names[0]: i, n.names[1]: item}, out)


def render(template: str, values: dict) -> str:
    out: list[str] = []
    _exec(parse(template), values, values, {}, out)
    return "".join(out)
