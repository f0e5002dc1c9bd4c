"""One attempt at a webhook delivery: sign the body, POST it to the checked address, follow
redirects by hand so each hop is checked again (targets.py), and say how it went.

The signature (``X-Feedback-Signature: t=<unix seconds>,v1=<hex>``) is HMAC-SHA256 under the
webhook's secret of ``"<t>." + body``, the scheme Stripe documents: the timestamp inside the MAC
lets a receiver refuse a replayed request, and ``v1`` leaves room for another scheme later. It is
made afresh at every attempt (a new ``t``) over the same body bytes.

httpx is asked for the checked IP address itself, with ``Host`` and the TLS server name set to
the URL's host: the certificate is still verified against the name, and nothing resolves the
name a second time. httpx's own redirect following is off, since it would not re-check a hop.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from urllib.parse import urljoin

import httpx

from feedback.platform.errors import DomainError

from .targets import Target, allow_private_targets, target_check, url_parts

SIGNATURE_HEADER = "X-Feedback-Signature"
REDIRECTS = {301, 302, 303, 307, 308}
MAX_HOPS = 3
# A receiver should answer at once and do its work later; a slow one is a failed attempt.
TIMEOUT = httpx.Timeout(5.0, connect=3.0)
USER_AGENT = "FeedbackLoop-Webhooks/1"


@dataclass(frozen=True)
class Attempt:
    ok: bool
    status_code: int | None = None
    error: str = ""


def signature_header(*, secret: str, body: bytes, timestamp: int) -> str:
    signed = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def _request(
    client: httpx.Client, target: Target, body: bytes, headers: dict[str, str]
) -> httpx.Response:
    default_port = 443 if target.scheme == "https" else 80
    host_header = target.host if ":" not in target.host else f"[{target.host}]"
    if target.port != default_port:
        host_header += f":{target.port}"
    url = httpx.URL(
        scheme=target.scheme, host=target.address, port=target.port,
        raw_path=target.path.encode("ascii", "strict"),
    )  # fmt: skip
    return client.post(
        url, content=body, headers={**headers, "Host": host_header},
        extensions={"sni_hostname": target.host},
    )  # fmt: skip


def _hop_allows_private(url: str, first_host: str | None, allow_private: bool | None) -> bool:
    """Private targets, where allowed, are the URL an admin registered and redirects on that
    same host (http to https, a new path): a Location is the receiver's choice, not the
    admin's, so it may not lead into another private host."""
    allowed = allow_private_targets() if allow_private is None else allow_private
    if not allowed or first_host is None:
        return allowed
    return url_parts(url)[1] == first_host


def webhook_post(
    *, url: str, secret: str, body: bytes, headers: dict[str, str],
    allow_private: bool | None = None,
) -> Attempt:  # fmt: skip
    """POST ``body`` signed to ``url``, following up to MAX_HOPS redirects, each checked."""
    signed = {
        **headers,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: signature_header(secret=secret, body=body, timestamp=int(time.time())),
    }
    current, first_host = url, None
    with httpx.Client(timeout=TIMEOUT, follow_redirects=False, trust_env=False) as client:
        for _hop in range(MAX_HOPS + 1):
            try:
                target = target_check(current, allow_private=_hop_allows_private(
                    current, first_host, allow_private
                ))  # fmt: skip
                first_host = first_host or target.host
                response = _request(client, target, body, signed)
            except DomainError as exc:
                return Attempt(ok=False, error=f"Refused {current}: {exc.detail}")
            except (httpx.HTTPError, UnicodeError) as exc:
                return Attempt(ok=False, error=f"{type(exc).__name__}: {exc}"[:2000])
            location = response.headers.get("location")
            if response.status_code in REDIRECTS and location:
                current = urljoin(current, location)
                continue
            if 200 <= response.status_code < 300:
                return Attempt(ok=True, status_code=response.status_code)
            return Attempt(
                ok=False,
                status_code=response.status_code,
                error=f"The receiver answered {response.status_code}.",
            )
    return Attempt(ok=False, error=f"More than {MAX_HOPS} redirects.")
