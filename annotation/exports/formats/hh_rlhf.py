"""Anthropic's HH-RLHF format: the preference pairs of ``pairs.py`` with each side the whole
conversation as a text transcript."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from ..context import ExportContext
from .pairs import PairHead, pair_fields, pair_format

if TYPE_CHECKING:
    import pyarrow as pa

HH_SPEAKERS = {"user": "Human", "assistant": "Assistant"}


def hh_transcript(messages: Iterable[Mapping[str, str]]) -> str:
    """A conversation as an HH-RLHF transcript, ``"\\n\\nHuman: …\\n\\nAssistant: …"``. HH has no
    system speaker: as in Anthropic's text-completion prompts, a system turn's text comes
    first, before the first ``"\\n\\nHuman:"``."""
    return "".join(
        message["content"]
        if message["role"] == "system"
        else f"\n\n{HH_SPEAKERS[message['role']]}: {message['content']}"
        for message in messages
    )


def _hh_schema(context: ExportContext) -> pa.Schema:
    import pyarrow as pa

    text = pa.string()
    return pa.schema([("chosen", text), ("rejected", text), *pair_fields(pa, context)])


HH_RLHF = pair_format(
    "hh_rlhf", "Anthropic HH-RLHF transcripts (\\n\\nHuman: … \\n\\nAssistant: …)",
    PairHead(False, lambda prompt, turn: hh_transcript(prompt + turn)), _hh_schema,
)  # fmt: skip
