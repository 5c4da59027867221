"""`gc_freeze`: the lifespan freezes what exists at start-up only when the setting says so."""

from __future__ import annotations

import gc

import pytest

from tests.server.conftest import ServerFactory


@pytest.mark.parametrize("freeze", [True, False])
async def test_the_lifespan_freezes_only_when_asked(
    server_factory: ServerFactory, freeze: bool
) -> None:
    gc.unfreeze()  # what an earlier app of this test process froze
    try:
        await server_factory(gc_freeze=freeze)
        assert (gc.get_freeze_count() > 0) is freeze
    finally:
        gc.unfreeze()
