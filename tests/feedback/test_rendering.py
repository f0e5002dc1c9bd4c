"""Untrusted text to HTML (``feedback/platform/rendering.py``): plain paragraphs skip
markdown-it, and must come out exactly as markdown-it would make them."""

from __future__ import annotations

import random

import nh3
import pytest

from benchmarks._seed import _text
from feedback.platform import rendering
from feedback.platform.rendering import render_untrusted
from feedback.serving import synthetic


def _by_markdown_it(text: str) -> str:
    return nh3.clean(
        rendering._markdown().render(text),
        tags=rendering.ALLOWED_TAGS,
        attributes=rendering.ALLOWED_ATTRIBUTES,
        url_schemes=rendering.URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
    )


TRICKY = [
    'He said "no" twice.', "x\ny\n\nz", "x  \ny", "a\n   b", "1) x", "2024", "a\n1. b",
    "a\n2. b", "a\n- b", "a\n===", "foo\n    bar", "x{y}z", "http://x.y", "a:b", "it's",
    "x\n\n\ny", "a | b", "3.", "3)x", "1234567890. x", "#tag", "# Title", "+1 from me",
    "a\n\n", "\n\nlead", "tab\there", "cr\r\nlf", "a & b", "<b>bold</b>", "*em*", "__x__",
    "`code`", "[link](http://x)", "~~gone~~", "line\\", "ünïcödé — dash… “quotes”", " lead",
    "trail ", "a\n \nb", "=", "-", "---", "***", "> quote", "\u00a0nbsp", "x\u00a0y", "",
]  # fmt: skip
# Characters of prose, plus each that can make Markdown, and line breaks.
ALPHABET = "abcdefghij klmnop XYZ 0123456789 .,;:?'\"()/{}%$@^=+-#>*_`[]!&<|~\\\t\n\n\u00a0é—“”"


def _generated(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        words = [
            "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 8)))
            for _ in range(rng.randint(1, 30))
        ]
        texts.append(" ".join(words))
        # Prose as models write it: sentences, some lines, some paragraphs.
        lines = [_text(rng, rng.randint(5, 120)) for _ in range(rng.randint(1, 4))]
        texts.append(rng.choice(["\n", "\n\n", "\n\n\n"]).join(lines))
    return texts


@pytest.mark.parametrize("text", TRICKY)
def test_tricky_texts_render_as_markdown_it_renders_them(text):
    assert render_untrusted(text) == _by_markdown_it(text)


def test_generated_texts_render_as_markdown_it_renders_them():
    rng = random.Random(2)
    answers = [
        synthetic.answer_for(question, correct=correct, polite=polite, rng=rng)
        for question in (synthetic.question_random(rng) for _ in range(100))
        for correct in (True, False)
        for polite in (True, False)
    ]
    texts = _generated(3000, seed=1) + synthetic.prompts(200, seed=3) + answers
    fast = 0
    for text in texts:
        assert render_untrusted(text) == _by_markdown_it(text), repr(text)
        fast += rendering._plain_paragraphs(text) is not None
    # Not vacuous: many took the plain path, and many did not.
    assert 0.2 * len(texts) < fast < 0.9 * len(texts), (fast, len(texts))
