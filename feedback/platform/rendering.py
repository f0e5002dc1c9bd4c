"""Untrusted model text to safe HTML.

Prompts and completions are untrusted: a model (or whoever wrote an imported file) controls them.
They are rendered as Markdown with raw HTML switched off, so ``<script>`` or ``<svg onload>`` come
out as visible text, and the result passes through an allow-list sanitizer (nh3, the Rust ammonia
library) as a second wall: no images (they would make requests), no attributes that run code,
and links only to http, https and mailto. Pages also forbid inline script through their CSP.
"""

from __future__ import annotations

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
    return nh3.clean(
        _markdown().render(text),
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
    )
