"""Pushing a dataset to the Hugging Face Hub with ``datasets``' own ``push_to_hub``, and the
card after it. Offline (``HF_HUB_OFFLINE``, as in the tests and on air-gapped machines) it fails
at once with a message saying so, instead of the hub client's retries against no network."""

from __future__ import annotations

import os
from typing import Any

from feedback.platform.errors import DomainError

TRUE = {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    """Whether the Hub is off for this process: the variable now, or as the client read it."""
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in TRUE or bool(
        constants.HF_HUB_OFFLINE
    )


def hub_repo_check(repo_id: str) -> str:
    """``repo_id`` if it is a valid dataset repository id (``user/name`` or ``name``)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise DomainError(str(exc), fields={"repo_id": [str(exc)]}) from None
    return repo_id


def hub_push_ready(repo_id: str) -> None:
    """Refuse at once, before any work: a bad repository id, or the Hub turned off here."""
    hub_repo_check(repo_id)
    if hub_offline():
        why = (
            f"The Hugging Face Hub is offline here (HF_HUB_OFFLINE is set): nothing was pushed "
            f"to {repo_id}. Unset HF_HUB_OFFLINE and sign in (hf auth login, or HF_TOKEN)."
        )
        raise DomainError(why, code="hub_offline", status=409, fields={"repo_id": [why]})


def hub_push_dataset(
    *, dataset: Any, repo_id: str, card_text: str, private: bool = True, token: str | None = None
) -> str:
    """Push ``dataset`` (a Dataset or DatasetDict) to the dataset repo ``repo_id``, then make
    ``card_text`` the card's prose, keeping the metadata ``push_to_hub`` wrote (its splits and
    features); the repo's URL."""
    hub_push_ready(repo_id)
    import httpx
    from huggingface_hub import DatasetCard
    from huggingface_hub.errors import HfHubHTTPError

    try:
        dataset.push_to_hub(repo_id, private=private, token=token)
        card = DatasetCard.load(repo_id, repo_type="dataset", token=token)
        card.text = card_text
        card.push_to_hub(repo_id, repo_type="dataset", token=token, commit_message="Datasheet")
    # No network, refused, not signed in, no access: a 502 that says which, not a 500.
    except (OSError, HfHubHTTPError, httpx.HTTPError) as exc:
        why = f"The push to {repo_id} failed: {type(exc).__name__}: {str(exc)[:300]}"
        raise DomainError(why, code="hub_failed", status=502, fields={"repo_id": [why]}) from exc
    return f"https://huggingface.co/datasets/{repo_id}"
