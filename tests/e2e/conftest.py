"""What the browser tests share for the whole session: the playground server, the same with an API key, and
Chromium. Each start costs seconds (a server 7 s on a quiet 2-core machine, Chromium 2 s) and was repeated by
every browser test file; a test still gets a fresh browser context (its own storage), and a test that adds a voice
gives it a name no other test uses."""

from __future__ import annotations

import pytest

from pages import KEY, launch_chromium, start_playground_server


@pytest.fixture(scope="session")
def playground(tiny_checkpoint, tmp_path_factory):
    srv = start_playground_server(tiny_checkpoint, tmp_path_factory.mktemp("playground"))
    yield srv
    srv.stop(wait=False)


@pytest.fixture(scope="session")
def keyed_playground(tiny_checkpoint, tmp_path_factory):
    """The playground server with an API key (pages.KEY): pages that must be given the key."""
    srv = start_playground_server(tiny_checkpoint, tmp_path_factory.mktemp("keyed"), env={"HIGGS_API_KEY": KEY})
    yield srv
    srv.stop(wait=False)


browser = pytest.fixture(scope="session")(launch_chromium)
