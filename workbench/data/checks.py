"""Row-level quality checks: placeholders, broken text, secrets, PII, empty and short answers.

Every detector is a pure function of one string (or one record) so the cleaner, the inspector and
the app share the same rules. Rules are chosen for *few false positives*: a check that fires on
every code sample is worse than none, so each rule below says what it deliberately does not match.

Placeholders (`find_placeholders`) — returns the placeholder as written, whitespace trimmed:
  * `{{ name }}` / `{{name}}` (mustache / Jinja variables, e.g. LLaMA-Factory's identity.json)
    -> "{{name}}". Single braces `{name}` are NOT matched: they are everywhere in code, JSON and
    format strings.
  * `[INSERT NAME]`, `[Your Name]`, `[Company Name]`-style: square brackets holding either
    ALL-CAPS words (`[NAME]`, `[YOUR_EMAIL]`) or words starting with Insert/Your/Enter/Add/
    Placeholder. Not matched: indexing (`arr[INDEX]`, preceded by a name), Markdown links
    (`[text](url)`), log levels (`[INFO]`, `[ERROR]`...), checkboxes `[x]`, citations `[1]`.
  * `<YOUR_NAME>`, `<PLACEHOLDER>`, `<insert name>`: angle brackets holding ALL-CAPS words (3+
    chars) or words starting with insert/your/enter. Not matched: HTML tags (lower case),
    generics (`List<T>`, `Map<String, Integer>`, preceded by a name).

Broken text (`broken_text_issues`) — names of the problems found:
  "control characters" (C0/C1 except \\t \\n \\r), "replacement character" (U+FFFD),
  "mojibake" (UTF-8 read as Latin-1/cp1252: "Ã©", "â€™", "Ã¼"...), "lone surrogate",
  "zero-width characters" (U+200B..U+200D, U+2060, U+FEFF inside the text).

Secrets (`find_secrets`) -> [(kind, full match)]; mask with `mask_secret` before showing anyone.
PII (`find_pii`) -> [(kind, match)]: "email", "phone" (international +CC... or North-American
  3-3-4; never dates, versions or plain numbers), "ipv4" (public addresses only: private,
  loopback, link-local and documentation ranges are common in tutorials and are skipped).
"""

from __future__ import annotations

import ipaddress
import math
import re

# ---------------------------------------------------------------------------------------------
# Placeholders

LOG_WORDS = frozenset(
    "INFO DEBUG WARN WARNING ERROR TRACE FATAL CRITICAL NOTICE OK PASS FAIL FAILED DONE TODO NOTE "
    "SKIP SKIPPED".split()
)
PLACEHOLDER_RE = re.compile(
    r"\{\{-?\s*(?P<jinja>[A-Za-z_][\w.]*)\s*-?\}\}"
    # [CAPS WORDS] or [Insert/Your/Enter/Add/Placeholder ...], not after a name (indexing) and not
    # followed by "(" (Markdown link).
    r"|(?<![\w\])])\[(?P<square>[A-Z][A-Z0-9_]*(?:[ _-][A-Z0-9_]+){0,5}"
    r"|(?i:insert|your|enter|add|placeholder)\b[^\[\]\n]{0,40})\](?!\()"
    # <CAPS_WORDS> or <insert/your/enter ...>, not after a name (generics).
    r"|(?<![\w])<(?P<angle>[A-Z][A-Z0-9_]{2,}(?: [A-Z0-9_]+){0,5}"
    r"|(?i:insert|your|enter)\b[^<>\n]{0,40})>"
)


def find_placeholders(text: str) -> list[str]:
    """Leftover template placeholders in `text`, in order, as written ("{{name}}", "[NAME]")."""
    if "{{" not in text and "[" not in text and "<" not in text:
        return []  # fast path: most rows have none of the opening characters of a rule
    found = []
    for m in PLACEHOLDER_RE.finditer(text):
        if m.group("jinja"):
            found.append("{{" + m.group("jinja") + "}}")
        elif m.group("square"):
            inner = m.group("square").strip()
            if inner.upper() in LOG_WORDS or len(inner) < 2:
                continue
            found.append(f"[{inner}]")
        else:
            found.append(f"<{m.group('angle').strip()}>")
    return found


# ---------------------------------------------------------------------------------------------
# Broken text

_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_ZERO_WIDTH_RE = re.compile(r"[\u200b\u200c\u200d\u2060\ufeff]")
_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")
# UTF-8 lead byte (Ã Â â Å Ð Ñ ...) decoded as Latin-1/cp1252, followed by a continuation byte shown
# as a cp1252/Latin-1 character. "â€" (U+2019 etc.) and "Ã" + [\x80-\xbf] cover French, German,
# Spanish accents and smart quotes, the common cases.
_MOJIBAKE_RE = re.compile(
    "(?:[\u00c2\u00c3\u00c5][\u0080-\u00bf\u201a\u0192\u201e\u2026\u2020\u2021\u02c6\u2030"
    "\u0160\u2039\u0152\u017d\u2018\u2019\u201c\u201d\u2022\u2013\u2014\u02dc\u2122\u0161\u203a"
    "\u0153\u017e\u0178]|\u00e2\u20ac[\u0099\u009c\u009d\u201c\u201d\u2122\u02dc\u0153\u00a6\u00a2\u2018\u2019\u201a\u201e\u2026\u2020\u2021])"
)


def broken_text_issues(text: str) -> list[str]:
    """Kinds of broken text found (each at most once), in a fixed order."""
    issues = []
    if _CONTROL_RE.search(text):
        issues.append("control characters")
    if text.isascii():
        return issues  # the other problems are all non-ASCII
    if "\ufffd" in text:
        issues.append("replacement character")
    if _MOJIBAKE_RE.search(text):
        issues.append("mojibake")
    if _SURROGATE_RE.search(text):
        issues.append("lone surrogate")
    # A BOM at the very start is an encoding artefact too, but only inside text is it invisible junk.
    if _ZERO_WIDTH_RE.search(text):
        issues.append("zero-width characters")
    return issues


# ---------------------------------------------------------------------------------------------
# Secrets

# (kind, literal prefixes the key must contain, pattern). The literals gate each pattern with a
# plain substring test, which is ~100x cheaper than a regex scan; most text has none of them.
_SECRET_RULES: list[tuple[str, tuple[str, ...], re.Pattern[str]]] = [
    ("private key", ("-----BEGIN",), re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")),
    ("openai key", ("sk-",), re.compile(r"(?<![\w-])sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}")),
    ("anthropic key", ("sk-ant-",), re.compile(r"(?<![\w-])sk-ant-[A-Za-z0-9_-]{20,}")),
    ("huggingface token", ("hf_",), re.compile(r"(?<![\w-])hf_[A-Za-z0-9]{30,}")),
    ("aws access key", ("AKIA", "ASIA"), re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Z0-9])")),
    ("github token", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
     re.compile(r"(?<![\w-])(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_\w{22,})")),
    ("slack token", ("xox",), re.compile(r"(?<![\w-])xox[abposr]-[A-Za-z0-9-]{10,}")),
    ("google api key", ("AIza",), re.compile(r"(?<![\w-])AIza[0-9A-Za-z_-]{35}")),
    ("stripe key", ("k_live_",), re.compile(r"(?<![\w-])[sr]k_live_[0-9a-zA-Z]{20,}")),
]
# Words that must appear (lower-cased) before the generic assignment rule is worth running.
_GENERIC_SECRET_WORDS = ("key", "secret", "token", "passw")
# key = "value" assignments whose value looks random; the name must say it is a secret.
_GENERIC_SECRET_RE = re.compile(
    r"(?i)(?:api[_-]?key|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token|token|password|passwd)"
    r"[\"']?\s*[:=]\s*[\"']([^\"'\s]{16,200})[\"']"
)
_DUMMY_RE = re.compile(r"(?i)your|example|xxxx|placeholder|dummy|changeme|\*\*\*|<|\$\{|\{\{|os\.environ")


def _entropy(s: str) -> float:
    """Shannon entropy in bits per character."""
    counts = {}
    for c in s:
        counts[c] = counts.get(c, 0) + 1
    return -sum(n / len(s) * math.log2(n / len(s)) for n in counts.values())


def _looks_random(value: str) -> bool:
    has_digit = any(c.isdigit() for c in value)
    has_alpha = any(c.isalpha() for c in value)
    return has_digit and has_alpha and _entropy(value) >= 3.5 and not _DUMMY_RE.search(value)


def find_secrets(text: str) -> list[tuple[str, str]]:
    """(kind, match) for credentials in `text`. The match is the full secret: mask it for display."""
    found = []
    for kind, literals, pattern in _SECRET_RULES:
        if not any(lit in text for lit in literals):
            continue
        for m in pattern.finditer(text):
            # A real key mixes digits and letters; "sk-this-is-a-long-word" is prose.
            if kind == "private key" or _looks_random(m.group(0)):
                found.append((kind, m.group(0)))
    lowered = text.lower()
    if not any(word in lowered for word in _GENERIC_SECRET_WORDS):
        return found
    seen = {match for _, match in found}
    for m in _GENERIC_SECRET_RE.finditer(text):
        value = m.group(1)
        if _looks_random(value) and not any(value in s or s in value for s in seen):
            found.append(("generic secret", value))
    return found


def mask_secret(secret: str) -> str:
    """Enough to recognise a secret, not enough to use it: "sk-abcdef...xyz" -> "sk-ab…yz"."""
    if len(secret) <= 8:
        return secret[:1] + "…"
    if secret.startswith("-----BEGIN"):
        return secret  # the header is not secret; the key body is never matched
    return f"{secret[:5]}…{secret[-2:]}"


# ---------------------------------------------------------------------------------------------
# PII

_EMAIL_RE = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}\b")
_PHONE_RE = re.compile(
    # International: +CC then groups; the digit count is checked afterwards (E.164: 8..15).
    r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}(?![\w-])"
    # North American: (555) 123-4567, 555-123-4567, 555.123.4567, optionally +1 / 1-.
    r"|(?<![\w.+-])(?:1[ .-])?(?:\([2-9]\d{2}\) ?|[2-9]\d{2}[ .-])\d{3}[ .-]\d{4}(?![\w-]|\.\d)"
)
_IPV4_RE = re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w.])")


_DIGIT_RUN_RE = re.compile(r"\d[\d .()-]{5,}\d|\d{1,3}\.\d{1,3}\.\d")


def find_pii(text: str) -> list[tuple[str, str]]:
    """(kind, match) for personal data: "email", "phone", "ipv4"."""
    found = []
    if "@" in text:
        found += [("email", m.group(0)) for m in _EMAIL_RE.finditer(text)]
    # Phone numbers and addresses need digit runs; skip the costly scans on text without any.
    if not _DIGIT_RUN_RE.search(text):
        return found
    for m in _PHONE_RE.finditer(text):
        digits = sum(c.isdigit() for c in m.group(0))
        if 10 <= digits <= 15 or (m.group(0).startswith("+") and digits >= 8 and digits <= 15):
            found.append(("phone", m.group(0)))
    for m in _IPV4_RE.finditer(text):
        # "version 1.2.3.4" is a version, not an address.
        if "version" in text[max(0, m.start() - 12) : m.start()].lower():
            continue
        if ipaddress.IPv4Address(m.group(0)).is_global:
            found.append(("ipv4", m.group(0)))
    return found


# ---------------------------------------------------------------------------------------------
# Records


def empty_fields(record: dict) -> list[str]:
    """What a record lacks: "messages" when it has none; otherwise the roles ("user", "assistant",
    "system", "tool") that have an empty (whitespace-only) message, plus "user"/"assistant" when
    the conversation has no message of that role at all."""
    messages = record.get("messages") or []
    if not messages:
        return ["messages"]
    empty = set()
    for m in messages:
        if not (m.get("content") or "").strip():
            empty.add(m.get("role", "?"))
    roles = {m.get("role") for m in messages}
    empty.update(r for r in ("user", "assistant") if r not in roles)
    return sorted(empty, key=lambda r: ("messages", "system", "user", "assistant", "tool").index(r)
                  if r in ("messages", "system", "user", "assistant", "tool") else 9)


def is_short_answer(record: dict, min_chars: int = 2) -> bool:
    """True when an assistant answer is non-empty but shorter than `min_chars` characters after
    stripping (empty answers are `empty_fields`' business, so the two counts do not overlap)."""
    for m in record.get("messages") or ():
        if m.get("role") == "assistant":
            n = len((m.get("content") or "").strip())
            if 0 < n < min_chars:
                return True
    return False
