"""Row-level detectors: positive and negative cases."""

import pytest

from workbench.data.checks import (
    broken_text_issues, empty_fields, find_pii, find_placeholders, find_secrets, is_short_answer,
    mask_secret,
)


def test_placeholders_positive():
    assert find_placeholders("I am {{name}} by {{ author }}.") == ["{{name}}", "{{author}}"]
    assert find_placeholders("Dear [Your Name], at [COMPANY NAME]") == ["[Your Name]", "[COMPANY NAME]"]
    assert find_placeholders("set <YOUR_API_KEY> and <insert name here>") == ["<YOUR_API_KEY>", "<insert name here>"]


@pytest.mark.parametrize("text", [
    "def f(x): return {'a': {x}}", '{"a": {"b": [1, 2]}}', "f'{name} is {age}'", "arr[INDEX] = 1",
    "[INFO] started", "[click here](http://x.org)", "List<String> and Map<String, Integer>",
    "<div class='a'>hi</div>", "- [x] done [1]",
])
def test_placeholders_negative(text):
    assert find_placeholders(text) == []


def test_broken_text():
    assert broken_text_issues("caf\u00c3\u00a9") == ["mojibake"]
    assert broken_text_issues("it\u00e2\u20ac\u2122s") == ["mojibake"]
    assert broken_text_issues("ok\x00\x1b") == ["control characters"]
    assert broken_text_issues("a\ufffdb") == ["replacement character"]
    assert broken_text_issues("x\ud800") == ["lone surrogate"]
    assert broken_text_issues("zero\u200bwidth") == ["zero-width characters"]
    assert broken_text_issues("café naïve — “quoted” ü\n\ttab") == []


@pytest.mark.parametrize("text,kind", [
    ("key sk-proj-abc123DEF456ghi789JKL012mno", "openai key"),
    ("hf_aB3dEfGh1jKlMn0pQrStUvWxYz12345678", "huggingface token"),
    ("AKIAZ7Q4M2X9B3N5P8KD", "aws access key"),
    ("ghp_1a2B3c4D5e6F7g8H9i0JkLmNoPqRsTuVwXyZ", "github token"),
    ("xoxb-123456789012-abcDEF123ghi", "slack token"),
    ('api_key = "a8f3K9zQ2mX7vB1nL4pR6tY0"', "generic secret"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow", "private key"),
])
def test_secrets_positive(text, kind):
    assert [k for k, _ in find_secrets(text)] == [kind]


@pytest.mark.parametrize("text", [
    "use sk-learn, a scikit-learn-alternative-library", "the task-list-of-things-to-do-today",
    'api_key = "your_api_key_here_please"', 'password = "${DB_PASSWORD_FROM_ENV}"',
    "AKIAIOSFODNN7EXAMPLE", "hf_hub_download is a function", "through high thoughts",
])
def test_secrets_negative(text):
    assert find_secrets(text) == []


def test_mask_secret():
    assert mask_secret("sk-abcdefghijklmnopyz") == "sk-ab…yz"
    assert "cdefgh" not in mask_secret("sk-abcdefghijklmnopyz")


def test_pii_positive():
    assert find_pii("mail john.doe@example.com") == [("email", "john.doe@example.com")]
    assert [k for k, _ in find_pii("call (555) 123-4567 or +44 20 7946 0958")] == ["phone", "phone"]
    assert find_pii("server 8.8.8.8") == [("ipv4", "8.8.8.8")]


@pytest.mark.parametrize("text", [
    "version 1.2.3.4", "on 2024-01-15 at 10:30", "10 000 000 people", "pi is 3.14159265",
    "ISBN 978-3-16-148410-0", "from 1999-2024", "@decorator", "user@localhost",
    "ip 192.168.1.1 and 127.0.0.1", "v2.10.3", "call 12345",
])
def test_pii_negative(text):
    assert find_pii(text) == []


def test_empty_fields_and_short_answers():
    rec = lambda *ms: {"messages": [{"role": r, "content": c} for r, c in ms]}
    assert empty_fields({"messages": []}) == ["messages"]
    assert empty_fields(rec(("user", "hi"), ("assistant", "  "))) == ["assistant"]
    assert empty_fields(rec(("user", ""))) == ["user", "assistant"]
    assert empty_fields(rec(("user", "hi"), ("assistant", "ok"))) == []
    assert is_short_answer(rec(("user", "hi"), ("assistant", "k")), min_chars=2)
    assert not is_short_answer(rec(("user", "hi"), ("assistant", "")), min_chars=2)
    assert not is_short_answer(rec(("user", "hi"), ("assistant", "ok")), min_chars=2)
