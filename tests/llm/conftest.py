"""Session-wide fixtures for the embedded model: its file, a provider, a reference Llama.

Loading SmolLM2 takes a fraction of a second, but one provider per session keeps the
worker thread and the model warm across tests, as they are in the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamkeep.llm.local import LocalProvider, find_model_file


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return find_model_file()


@pytest.fixture(scope="session")
def local_provider(smollm2_path: Path) -> Iterator[LocalProvider]:
    provider = LocalProvider(model_path=None)
    yield provider
    # The provider belongs to no event loop (a worker thread does the work).
    asyncio.run(provider.aclose())


@pytest.fixture(scope="session")
def reference_llama(smollm2_path: Path) -> Iterator[Any]:
    """llama-cpp-python's own high-level API on the same file: the answers to compare with."""
    from llama_cpp import Llama

    llama = Llama(model_path=str(smollm2_path), n_ctx=4096, verbose=False)
    yield llama
    llama.close()
