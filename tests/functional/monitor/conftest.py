"""The alert tests' real peers: an SMTP server and a webhook receiver, each started for the test that asks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from smtp_server import Inbox, smtp_server
from webhook_receiver import WebhookReceiver, webhook_receiver


@pytest.fixture
def smtp() -> Iterator[tuple[int, Inbox]]:
    with smtp_server() as started:
        yield started


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as opened:
        yield opened
