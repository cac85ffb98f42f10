"""Turning an HTML payload into text: charset from the HTTP header, then `<meta>`, then UTF-8, then detection.

A declared charset is used only if the bytes decode under it without error; labels are mapped as browsers map
them (WHATWG Encoding Standard: `iso-8859-1` and `us-ascii` mean windows-1252, `gb2312` means GB18030, ...).
"""
from __future__ import annotations

import codecs
import re

from charset_normalizer import from_bytes

_HEADER_CHARSET = re.compile(r"charset\s*=\s*[\"']?\s*([A-Za-z0-9_.:\-]+)", re.I)
_META_CHARSET = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?\s*([A-Za-z0-9_.:\-]+)", re.I)
_META_SCAN_BYTES = 16_384        # the HTML spec's prescan reads 1024; real pages put it later
_DETECT_BYTES = 65_536           # charset_normalizer is slow on whole pages; the head is enough

# WHATWG label → a Python codec that decodes what browsers decode under that label.
_BROWSER_CODEC = {
    "iso8859_1": "cp1252", "latin_1": "cp1252", "ascii": "cp1252", "cp1252": "cp1252",
    "gb2312": "gb18030", "gbk": "gb18030", "euc_kr": "cp949", "ks_c_5601_1987": "cp949",
    "big5": "big5hkscs", "shift_jis": "cp932", "tis_620": "cp874", "iso8859_9": "cp1254",
    "iso8859_11": "cp874",
}
# Detection guesses only these; its rarer answers (cp775, cp1006, ...) on mostly-ASCII pages are noise, and
# windows-1252 is what browsers assume for an undeclared legacy page.
_DETECTABLE = {"cp1250", "cp1251", "cp1252", "cp1253", "cp1254", "cp1255", "cp1256", "cp1257", "cp1258",
               "iso8859-2", "iso8859-5", "iso8859-7", "iso8859-15", "koi8-r", "koi8-u", "gb18030",
               "big5hkscs", "cp932", "euc_jp", "cp949", "cp874", "iso2022_jp", "utf-8"}


def codec_for(label: str) -> str | None:
    """The Python codec for a charset label as browsers read it, or None if the label is unknown."""
    label = label.strip().strip("\"'").lower()
    if label in ("utf8", "utf-8", "unicode-1-1-utf-8", "x-unicode20utf8"):
        return "utf-8"
    if label.startswith("window-"):      # a common misspelling of windows-125x
        label = "windows-" + label[len("window-"):]
    try:
        name = codecs.lookup(label).name
    except LookupError:
        return None
    if name in ("utf-16-le", "utf-16-be", "utf-16", "utf-32"):
        return "utf-8"    # a page served as UTF-16 that is really ASCII-compatible: browsers also use UTF-8 here
    return _BROWSER_CODEC.get(name.replace("-", "_"), name)


def header_charset(content_type: str) -> str | None:
    match = _HEADER_CHARSET.search(content_type or "")
    return match.group(1) if match else None


def meta_charset(body: bytes) -> str | None:
    match = _META_CHARSET.search(body[:_META_SCAN_BYTES])
    return match.group(1).decode("ascii", "replace") if match else None


def decode_html(body: bytes, content_type: str = "") -> tuple[str, str, str]:
    """(text, codec, source) where source is http, meta, utf8, detected or fallback."""
    if body.startswith(codecs.BOM_UTF8):
        return body[len(codecs.BOM_UTF8):].decode("utf-8", "replace"), "utf-8", "bom"
    tried = set()
    for source, label in (("http", header_charset(content_type)), ("meta", meta_charset(body)), ("utf8", "utf-8")):
        codec = codec_for(label) if label else None
        if codec is None or codec in tried:
            continue
        tried.add(codec)
        try:
            return body.decode(codec), codec, source
        except (UnicodeDecodeError, LookupError):
            continue
    best = from_bytes(body[:_DETECT_BYTES]).best()
    if best is not None:
        codec = codec_for(best.encoding)
        if codec in _DETECTABLE:
            return body.decode(codec, "replace"), codec, "detected"
    return body.decode("cp1252", "replace"), "cp1252", "fallback"
