"""PII redaction: e-mail addresses, public IP addresses, phone numbers and payment card numbers are replaced
by typed placeholders; the document stays, with a count per type.

- e-mail: `local@domain.tld`;
- IPv4/IPv6: only addresses that are globally routable (`ipaddress.is_global`): private, loopback and
  link-local ranges stay, and a dotted quad right after "version"/"v" is a version number, not an address;
- phone: international numbers (`+` and 8 to 15 digits in groups) and common national formats
  (North American `(555) 123-4567` / `555-123-4567`, European trunk-prefixed `030 1234567`, `0171-1234567`);
- card: 13 to 19 digits, optionally grouped by spaces or dashes, passing the Luhn check.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from filters.verdict import Verdict

PLACEHOLDERS = {"email": "<EMAIL>", "ip": "<IP_ADDRESS>", "phone": "<PHONE>", "card": "<CARD_NUMBER>"}


@dataclass(frozen=True)
class PiiConfig:
    email: bool = True
    ip: bool = True
    phone: bool = True
    card: bool = True


_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,24}(?![\w-])")
_DIGIT_RUN = re.compile(r"(?<![\w-])\d(?:[ -]?\d)*(?![\w])")    # digits, single spaces or dashes between
_IPV4 = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\d]|\.\d)")   # left boundary: in _ipv4
_IPV6 = re.compile(r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Fa-f:])")
_IPV6_HINT = re.compile(r"[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:")
_VERSION_BEFORE = re.compile(r"\b(?:version|ver\.?|v)\s*$", re.I)
_PHONE = re.compile(
    r"(?<![\w+])(?:"
    r"\+\d{1,3}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{2,5}){2,5}"          # +49 30 1234567, +1 (555) 123-4567
    r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}"                                  # (555) 123-4567
    r"|\d{3}[.-]\d{3}[.-]\d{4}"                                         # 555-123-4567
    r"|0\d{1,4}[ /-]\d{3,8}(?:[ -]\d{2,5})?"                            # 030 1234567, 0171-1234567
    r")(?![\w])")


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _redact_cards(run: str) -> tuple[str, int]:
    """Card numbers inside a run of digit groups ("2021 4111 1111 1111 1111"): windows that start and end at
    group boundaries, hold 13 to 19 digits and pass the Luhn check; the longest first from each start."""
    starts = [0] + [i + 1 for i, ch in enumerate(run) if ch in " -"]
    ends = [i for i, ch in enumerate(run) if ch in " -"] + [len(run)]
    pieces, position, found = [], 0, 0
    for start in starts:
        if start < position:
            continue
        for end in reversed([e for e in ends if e > start]):
            digits = re.sub(r"[ -]", "", run[start:end])
            if 13 <= len(digits) <= 19 and luhn_valid(digits):
                pieces.append(run[position:start] + PLACEHOLDERS["card"])
                position, found = end, found + 1
                break
    pieces.append(run[position:])
    return "".join(pieces), found


def _ipv4(match: re.Match, text: str) -> str | None:
    if match.start() and text[match.start() - 1] in "0123456789.":
        return None
    try:
        address = ipaddress.IPv4Address(match.group(0))
    except ValueError:
        return None
    if not address.is_global or _VERSION_BEFORE.search(text[max(0, match.start() - 10):match.start()]):
        return None
    return PLACEHOLDERS["ip"]


def _ipv6(match: re.Match) -> str | None:
    candidate = match.group(0)
    if candidate.count(":") < 2 or not any(c in "0123456789abcdefABCDEF" for c in candidate):
        return None
    try:
        address = ipaddress.IPv6Address(candidate)
    except ValueError:
        return None
    return PLACEHOLDERS["ip"] if address.is_global else None


def _phone(match: re.Match) -> str | None:
    number = match.group(0)
    digits = sum(ch.isdigit() for ch in number)
    # An international number can run into a following number ("+49 30 1234567 2021"); redacting both is
    # the safe side. National formats are fixed in shape, so more than 15 digits there is not a phone.
    if digits >= 7 and (number.startswith("+") or digits <= 15):
        return PLACEHOLDERS["phone"]
    return None


def redact_pii(text: str, cfg: PiiConfig = PiiConfig(), *, language: str | None = None, resources=None) -> Verdict:
    """The text with PII replaced by placeholders; `fields` `pii_<type>` count what was replaced (0 for none),
    and `notes` the same counts for the stage's counters. A document is never dropped for PII."""
    counts = {}

    def sub(kind: str, pattern: re.Pattern, decide, text: str) -> str:
        n = 0

        def replace(match: re.Match) -> str:
            nonlocal n
            placeholder = decide(match)
            if placeholder is None:
                return match.group(0)
            n += 1
            return placeholder
        result = pattern.sub(replace, text)
        if n:
            counts[kind] = counts.get(kind, 0) + n
        return result

    if cfg.email and "@" in text:
        text = sub("email", _EMAIL, lambda m: PLACEHOLDERS["email"], text)
    if cfg.card:   # before phones: a card number would otherwise be read as a phone number
        total = 0

        def cards(match: re.Match) -> str:
            nonlocal total
            if sum(ch.isdigit() for ch in match.group(0)) < 13:
                return match.group(0)
            redacted, n = _redact_cards(match.group(0))
            total += n
            return redacted
        text = _DIGIT_RUN.sub(cards, text)
        if total:
            counts["card"] = total
    if cfg.ip:
        current = text
        text = sub("ip", _IPV4, lambda m: _ipv4(m, current), text)
        if "::" in text or _IPV6_HINT.search(text):
            text = sub("ip", _IPV6, _ipv6, text)
    if cfg.phone:
        text = sub("phone", _PHONE, _phone, text)
    return Verdict(text=text, fields={f"pii_{kind}": counts.get(kind, 0) for kind in PLACEHOLDERS}, notes=counts)
