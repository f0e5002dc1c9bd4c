"""Webhook targets and server-side request forgery: every spelling of a loopback, private,
link-local or metadata address is refused when an admin registers it, and every redirect hop is
checked again when a delivery follows it (a real receiver on loopback, private targets allowed
for the registered host only)."""

from __future__ import annotations

import pytest

from feedback.platform.webhooks.sending import webhook_post

from .webhook_receiver import receiver, signature_valid  # noqa: F401 (a fixture)

WEBHOOKS = "/api/v1/webhooks/"

FORBIDDEN = [
    "http://127.0.0.1/hook",
    "http://2130706433/hook",  # 127.0.0.1 as one decimal number
    "http://0177.0.0.1/hook",  # octal
    "http://0x7f.1/hook",  # hex, short form
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",  # IPv4-mapped IPv6
    "http://10.20.30.40/hook",
    "http://172.16.0.1/hook",
    "http://172.31.255.254/hook",
    "http://192.168.1.1/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00::1]/hook",
    "http://[fe80::]/hook",
    "http://0.0.0.0/hook",
    "http://localhost:8000/hook",  # a name that resolves to loopback
    "https://[64:ff9b::a9fe:a9fe]/",  # NAT64 spelling of the metadata address
]


@pytest.mark.django_db
@pytest.mark.parametrize("url", FORBIDDEN)
def test_an_admin_cannot_register_a_webhook_to_a_forbidden_address(api, admin, settings, url):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    response = api(admin).post(WEBHOOKS, {"url": url, "events": ["gate.decided"]}, format="json")
    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["code"] == "forbidden_target"
    assert "refused" in body["fields"]["url"][0]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.org/hook", "Only http and https"),
        ("http://user:pw@127.0.0.1/hook", "credentials"),
        ("http://no-such-host.invalid/hook", "does not resolve"),
        ("http://127.0.0.1\\@example.org/", "backslashes"),
    ],
)
def test_a_url_that_is_not_a_plain_http_url_is_refused_with_its_reason(api, admin, url, why):
    response = api(admin).post(WEBHOOKS, {"url": url, "events": ["gate.decided"]}, format="json")
    assert response.status_code == 400
    assert why in response.json()["fields"]["url"][0]


@pytest.mark.django_db
def test_allowing_private_targets_admits_loopback_but_never_metadata(api, admin, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    client = api(admin)
    ok = client.post(WEBHOOKS, {"url": "http://127.0.0.1:9/h", "events": ["ping"]}, format="json")
    assert ok.status_code == 400 and ok.json()["fields"]["events.0"]  # ping: not subscribable
    ok = client.post(
        WEBHOOKS, {"url": "http://127.0.0.1:9/h", "events": ["gate.decided"]}, format="json"
    )
    assert ok.status_code == 201, ok.json()
    for url in ("http://169.254.169.254/", "http://[fe80::1]/", "http://0.0.0.0/"):
        refused = client.post(WEBHOOKS, {"url": url, "events": ["gate.decided"]}, format="json")
        assert refused.status_code == 400, url
    assert api(None).get(WEBHOOKS).status_code == 401


def _post(url: str) -> object:
    return webhook_post(url=url, secret="s3cret", body=b'{"event":"ping"}', headers={},
                        allow_private=True)  # fmt: skip


@pytest.mark.parametrize(
    "location",
    [
        "http://10.0.0.1/elsewhere",  # another private host
        "http://169.254.169.254/latest/meta-data/",  # metadata
        "http://0x7f.1:{port}/final",  # the receiver itself, spelled as another host
        "http://localhost:{port}/final",
        "http://[::ffff:192.168.0.1]/",
    ],
)
def test_a_redirect_into_the_private_network_is_refused_before_it_is_followed(
    receiver,  # noqa: F811
    location,
):
    port = receiver.url.rsplit(":", 1)[1]
    receiver.answer("/hook", 307, Location=location.format(port=port))
    attempt = _post(f"{receiver.url}/hook")
    assert not attempt.ok
    assert attempt.error.startswith("Refused ")
    assert [r.path for r in receiver.requests] == ["/hook"]  # the hop was never made


def test_a_redirect_on_the_registered_host_is_followed_and_signed_again(receiver):  # noqa: F811
    receiver.answer("/hook", 308, Location="/moved")
    attempt = _post(f"{receiver.url}/hook")
    assert attempt.ok and attempt.status_code == 200
    assert [r.path for r in receiver.requests] == ["/hook", "/moved"]
    for request in receiver.requests:
        assert signature_valid("s3cret", request.body, request.headers["X-Feedback-Signature"])


def test_redirects_are_followed_a_bounded_number_of_times(receiver):  # noqa: F811
    for _ in range(5):
        receiver.answer("/loop", 302, Location="/loop")
    attempt = _post(f"{receiver.url}/loop")
    assert not attempt.ok and "redirects" in attempt.error
    assert len(receiver.requests) == 4  # the first request and three hops
