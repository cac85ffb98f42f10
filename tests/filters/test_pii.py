import ipaddress
import re

import pytest
from hypothesis import given, settings, strategies as st

from filters.pii import PiiConfig, luhn_valid, redact_pii


@pytest.mark.parametrize("text, redacted, counts", [
    ("Write to jane.doe+news@mail.example.co.uk today.", "Write to <EMAIL> today.", {"email": 1}),
    ("DNS at 8.8.8.8, router at 192.168.0.1.", "DNS at <IP_ADDRESS>, router at 192.168.0.1.", {"ip": 1}),
    ("Upgrade to version 2.4.10.1 now.", "Upgrade to version 2.4.10.1 now.", {}),
    ("Host 2001:4860:4860::8888 and ::1", "Host <IP_ADDRESS> and ::1", {"ip": 1}),
    ("Ring +49 30 1234567 or (555) 123-4567.", "Ring <PHONE> or <PHONE>.", {"phone": 2}),
    ("Tel. 030 12345678", "Tel. <PHONE>", {"phone": 1}),
    ("Card 4111 1111 1111 1111, not 4111 1111 1111 1112.", "Card <CARD_NUMBER>, not 4111 1111 1111 1112.",
     {"card": 1}),
    ("In 2019-2020 we sold 1,234,567 units at 12:30.", "In 2019-2020 we sold 1,234,567 units at 12:30.", {}),
    ("", "", {}),
])
def test_table(text, redacted, counts):
    verdict = redact_pii(text)
    assert (verdict.text, dict(verdict.notes), verdict.reason) == (redacted, counts, None)
    assert verdict.fields == {f"pii_{kind}": counts.get(kind, 0) for kind in ("email", "ip", "phone", "card")}


def test_types_can_be_switched_off():
    verdict = redact_pii("a@b.example", PiiConfig(email=False))
    assert (verdict.text, dict(verdict.notes)) == ("a@b.example", {})


def test_real_emails_in_dolma_docs(dolma_docs):
    emails = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
    found = [d["text"] for d in dolma_docs if emails.search(d["text"])]
    assert found, "the staged dolma docs hold real e-mail addresses"
    for text in found:
        redacted, _, _, counts = redact_pii(text)
        assert counts.get("email", 0) >= 1 and not re.search(r"\w@\w+\.\w", redacted)


# ------------------------------------------------------------------------------- any generated item is removed

def luhn_complete(prefix: str) -> str:
    for check in "0123456789":
        if luhn_valid(prefix + check):
            return prefix + check
    raise AssertionError


local = st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,15}", fullmatch=True)
label = st.from_regex(r"[a-z0-9][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True)
emails = st.builds(lambda l, d, t: f"{l}@{d}.{t}", local, label, st.sampled_from(["com", "org", "de", "co.uk", "info"]))
ipv4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address).filter(lambda a: a.is_global).map(str)
ipv6 = st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address).filter(lambda a: a.is_global) \
    .flatmap(lambda a: st.sampled_from([a.compressed, a.exploded]))
digits = lambda n: st.text("0123456789", min_size=n, max_size=n)
phones = st.one_of(
    st.builds(lambda cc, a, b: f"+{cc} {a} {b}", st.integers(1, 999), digits(3), digits(6)),
    st.builds(lambda a, b, c: f"({a}) {b}-{c}", digits(3), digits(3), digits(4)),
    st.builds(lambda a, b, c: f"{a}-{b}-{c}", digits(3), digits(3), digits(4)),
    st.builds(lambda a, b: f"0{a} {b}", digits(2), digits(7)),
)
cards = st.builds(lambda body, sep: sep.join(re.findall(".{1,4}", luhn_complete("4" + body))),
                  digits(14), st.sampled_from(["", " ", "-"]))
words = st.lists(st.sampled_from(["the", "report", "said", "on", "Monday", "contact", "at", "or", "2021"]),
                 min_size=1, max_size=8).map(" ".join)


@settings(max_examples=int(__import__("os").environ.get("PII_EXAMPLES", "300")), deadline=None)
@given(before=words, item=st.one_of(emails, ipv4, ipv6, phones, cards), after=words)
def test_generated_pii_never_survives(before, item, after):
    redacted, _, _, counts = redact_pii(f"{before} {item} {after}.")
    assert item not in redacted
    assert sum(counts.values()) >= 1
