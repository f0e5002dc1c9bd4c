"""Untrusted model text to safe HTML.

Prompts and completions are untrusted: a model (or whoever wrote an imported file) controls them.
They are rendered as Markdown with raw HTML switched off, so ``<script>`` or ``<svg onload>`` come
out as visible text, and the result passes through an allow-list sanitizer (nh3, the Rust ammonia
library) as a second wall: no images (they would make requests), no attributes that run code,
and links only to http, https and mailto. Pages also forbid inline script through their CSP.
"""

from __future__ import annotations

import re
from functools import lru_cache

import nh3
from markdown_it import MarkdownIt

ALLOWED_TAGS = {
    "p", "br", "hr", "strong", "em", "del", "code", "pre", "blockquote", "a",
    "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6",
    "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "code": {"class"}, "ol": {"start"}}
URL_SCHEMES = {"http", "https", "mailto"}


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False, "linkify": False}).enable(
        ["table", "strikethrough"]
    )


def render_untrusted(text: str) -> str:
    """Markdown to sanitized HTML that can be inserted into a page as markup."""
    plain = _plain_paragraphs(text)
    if plain is not None:
        return plain
    return nh3.clean(
        _markdown().render(text),
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
    )


# Characters that can make Markdown anywhere in a line (emphasis, code, links and images, raw HTML
# shown as text, entities, escapes, strikethrough, tables), and control characters (markdown-it
# normalises some of them).
_MARKUP = re.compile(r"[\\`*_\[\]<>&~|\x00-\x09\x0b-\x1f\x7f]")
# What can open a block at a line's start: a heading, a list item, a setext underline.
_BLOCK_START = re.compile(r"[#+=-]|\d{1,9}[.)](?:\s|$)")


def _plain_paragraphs(text: str) -> str | None:
    """The sanitized HTML of ``text`` when it is plain paragraphs, made without markdown-it or
    nh3; None when it may hold any Markdown.

    The lease renders every prompt and completion it shows, and markdown-it (pure Python) was a
    fifth of the lease route's own CPU under load (a py-spy profile of issue 19's benchmark);
    most model answers are plain prose. Plain means: no character that makes Markdown inside a
    line (``_MARKUP``), no line that starts a block (``_BLOCK_START``), no space at either end
    of a line (indented code, hard breaks), and paragraphs apart by one empty line or more. Such
    text is paragraphs of lines joined by newlines, as markdown-it writes them, and then as nh3
    writes them back (quotes as they are, a no-break space as ``&nbsp;``): safe by construction,
    since no ``<``, ``>`` or ``&`` gets this far. ``tests/feedback/test_rendering.py`` compares
    the two paths on generated text; anything else goes to markdown-it and nh3."""
    if not text or _MARKUP.search(text):
        return None
    paragraphs: list[list[str]] = [[]]
    for line in text.split("\n"):
        if not line:
            if paragraphs[-1]:
                paragraphs.append([])
            continue
        if line != line.strip() or _BLOCK_START.match(line):
            return None
        paragraphs[-1].append(line.replace("\u00a0", "&nbsp;"))
    return "".join(f"<p>{chr(10).join(lines)}</p>\n" for lines in paragraphs if lines) or None
