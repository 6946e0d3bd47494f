"""Thin async OpenAI-compatible client: bounded concurrency, retries, clear failures.

Knows nothing about benchmarks or files: it turns :class:`Request` objects into completions and
hands each one to a callback as soon as it arrives (the caller appends it to disk).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from benchforge.answers.stops import sent_stops
from benchforge.config import Mode, Thinking, thinking_choice
from benchforge.errors import BenchforgeError
from benchforge.prompts import Prompt


@dataclass(frozen=True)
class Request:
    """One request to the model server: the (task_id, sample_idx) it fills and its prompt."""

    task_id: str
    sample_idx: int
    prompt: Prompt


@dataclass(frozen=True)
class Completion:
    """What the server answered to one request: text, reasoning, finish reason, token counts
    (as the server reports them), latency and decode seconds."""

    text: str  # the reply's content ("" when the server sent null), stop strings not yet cut
    finish_reason: str | None  # "stop", "length" (cut by max_tokens), ...
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_s: float
    reasoning: str = ""  # the server's separate reasoning_content (never graded)
    reasoning_tokens: int | None = None  # usage.completion_tokens_details.reasoning_tokens
    decode_s: float | None = None  # the server's own decode time, where it reports one


@dataclass(frozen=True)
class ClientSettings:
    """How requests are sent: server, sampling, limits, concurrency, retries.

    Built by ``stages.generate`` (and ``smoke``) from the ``model`` config and the serving
    settings measured for the endpoint (``benchforge.serving``).
    """

    base_url: str
    served_name: str
    api_key: str = "EMPTY"
    mode: str = Mode.chat  # model.mode (a Mode member, or its value)
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 1024
    seed: int = 0
    stop: list[str] = field(default_factory=list)
    concurrency: int = 16
    timeout_s: float = 600.0
    max_retries: int = 4
    # chat template switches (e.g. {"enable_thinking": False}), sent as vLLM expects them
    chat_template_kwargs: dict[str, Any] | None = None
    # request: send temperature/top_p/seed; server: send none (the server's defaults apply)
    sampling: str = "request"


OnCompletion = Callable[[Request, Completion], None]
log = logging.getLogger("benchforge")


def api_key(model: Any) -> str:
    """The API key sent to the server: the environment variable ``model.api_key_env`` names,
    else ``EMPTY`` (vLLM and llama-cpp-python accept any key).

    Raises:
        BenchforgeError: ``model.api_key_env`` is set but that variable is not.
    """
    env = model.api_key_env
    if not env:
        return "EMPTY"
    value = os.environ.get(str(env))
    if not value:
        raise BenchforgeError(f"model.api_key_env={env}: environment variable ${env} is not set")
    return value


def thinking_kwargs(model: Any) -> dict[str, Any] | None:
    """``model.thinking: on|off`` as the chat template of Qwen3-style models reads it
    (``chat_template_kwargs={"enable_thinking": ...}``); None when ``thinking`` is null.

    Raises:
        BenchforgeError: any other value of ``model.thinking`` (:func:`thinking_choice`).
    """
    thinking = thinking_choice(model)
    if thinking is None:
        return None
    return {"enable_thinking": thinking is Thinking.on}


class _RetryWarnings(logging.Filter):
    """The openai client's own "Retrying request" INFO line, as one WARNING of ours per retry
    (a stuck or failing server is visible at once, not after every retry has run out)."""

    def __init__(self, settings: ClientSettings) -> None:
        super().__init__()
        self.settings = settings

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("Retrying request") and len(record.args or ()) >= 3:
            delay, retry, limit = record.args  # type: ignore[misc]
            log.warning("endpoint %s: request failed or got no answer within "
                        "model.request_timeout_s=%g s; retry %s of %s (model.max_retries) in "
                        "%.1f s", self.settings.base_url, self.settings.timeout_s, retry, limit,
                        float(delay))
        return False


@contextmanager
def _warn_on_retries(settings: ClientSettings) -> Iterator[None]:
    logger = logging.getLogger("openai._base_client")
    level, found = logger.level, _RetryWarnings(settings)
    logger.setLevel(logging.INFO)  # its retry lines are INFO; the filter drops all others
    logger.addFilter(found)
    try:
        yield
    finally:
        logger.removeFilter(found)
        logger.setLevel(level)


def generate(requests: list[Request], settings: ClientSettings, on_completion: OnCompletion,
             on_progress: Callable[[], None] | None = None) -> None:
    """Send every request; call ``on_completion`` for each answer, in arrival order.

    ``on_completion`` (answer extraction, the row write) runs on one worker thread, never on
    the event loop, so a slow extraction does not hold back the requests in flight; an
    exception it raises stops the run and is raised here once the loop has closed. Answers
    received before a stop are still handed over.
    """
    from concurrent.futures import ThreadPoolExecutor

    handler = ThreadPoolExecutor(max_workers=1, thread_name_prefix="benchforge-answers")
    pending: list[Any] = []

    def handed_off(request: Request, completion: Completion) -> None:
        for future in [f for f in pending if f.done()]:
            pending.remove(future)
            future.result()  # an earlier answer's failure stops the run here
        pending.append(handler.submit(on_completion, request, completion))

    try:
        with _warn_on_retries(settings):
            asyncio.run(_generate_all(requests, settings, handed_off, on_progress))
    finally:
        handler.shutdown(wait=True)  # answers already received are still written
    for future in pending:
        future.result()


async def _generate_all(requests: list[Request], settings: ClientSettings,
                        on_completion: OnCompletion,
                        on_progress: Callable[[], None] | None) -> None:
    import openai  # lazy: keeps `benchforge --help` instant

    # The openai client over its aiohttp transport (the `openai[aiohttp]` extra): the default
    # httpx transport costs ~0.9 ms of CPU per request at 64 in flight, aiohttp ~0.5 ms.
    concurrency = max(1, settings.concurrency)
    client = openai.AsyncOpenAI(base_url=settings.base_url, api_key=settings.api_key,
                                max_retries=settings.max_retries, timeout=settings.timeout_s,
                                http_client=openai.DefaultAioHttpClient())
    try:
        await _check_served(client, settings)
        queue = iter(requests)

        async def worker() -> None:
            # `concurrency` workers each send their next request when the last one is
            # answered: no task per request, no completion queue to scan
            for request in queue:
                completion = await _complete(client, settings, request)
                on_completion(request, completion)
                if on_progress:
                    on_progress()

        last_answer = [time.monotonic()]
        inner = on_progress

        def progressed() -> None:
            last_answer[0] = time.monotonic()
            if inner:
                inner()

        on_progress = progressed
        workers = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
        watchdog = asyncio.ensure_future(_watch(settings, last_answer))
        try:
            await asyncio.gather(*workers)
        finally:
            for task in [*workers, watchdog]:
                task.cancel()
            await asyncio.gather(*workers, watchdog, return_exceptions=True)
    finally:
        await client.close()


SILENCE_WARNING_S = 60.0  # a WARNING when no answer arrived for this long


async def _watch(settings: ClientSettings, last_answer: list[float]) -> None:
    """Say so while the server answers nothing (a hung server never keeps a run silent)."""
    while True:
        await asyncio.sleep(min(SILENCE_WARNING_S, settings.timeout_s) / 2)
        quiet = time.monotonic() - last_answer[0]
        if quiet >= SILENCE_WARNING_S:
            log.warning("endpoint %s: no answer for %.0f s (each request gives up after "
                        "model.request_timeout_s=%g s, then retries up to model.max_retries=%d)",
                        settings.base_url, quiet, settings.timeout_s, settings.max_retries)
            last_answer[0] = time.monotonic()


def _explain(exc: Exception, settings: ClientSettings, what: str) -> BenchforgeError:
    import openai

    attempts = settings.max_retries + 1
    refused = _connection_refused(exc)
    if refused:
        return BenchforgeError(
            f"endpoint {settings.base_url} unreachable after {attempts} attempts while {what}: "
            f"connection refused ({refused}), nothing listens there; is the server up? check "
            "model.base_url")
    if isinstance(exc, openai.APITimeoutError):
        return BenchforgeError(
            f"endpoint {settings.base_url}: no answer within model.request_timeout_s="
            f"{settings.timeout_s:g} s ({attempts} attempts) while {what}; the server accepts "
            "connections but does not answer: overloaded or stuck? check its log, or raise "
            "model.request_timeout_s")
    if isinstance(exc, openai.APIConnectionError):
        # the transport's own error says what happened (refused, reset, timed out)
        cause = exc.__cause__ or exc
        return BenchforgeError(
            f"endpoint {settings.base_url} unreachable after {attempts} attempts while {what} "
            f"({type(cause).__name__}: {cause}); is the server up? check model.base_url"
        )
    if isinstance(exc, openai.AuthenticationError):
        return BenchforgeError(
            f"endpoint {settings.base_url} refused the API key (HTTP 401) while {what}; "
            "set model.api_key_env to the name of the env var that holds the key"
        )
    if isinstance(exc, openai.APIStatusError):
        return BenchforgeError(
            f"endpoint {settings.base_url} answered HTTP {exc.status_code} while {what} "
            f"(after up to {attempts} attempts): {exc.message}"
        )
    return BenchforgeError(f"endpoint {settings.base_url} failed while {what}: {exc}")


def _connection_refused(exc: BaseException) -> str | None:
    """The refusal in an error's cause chain (some transports call it a connect timeout)."""
    seen: BaseException | None = exc
    while seen is not None:
        text = str(seen)
        if isinstance(seen, ConnectionRefusedError) or "Connect call failed" in text \
                or "Connection refused" in text:
            return f"{type(seen).__name__}: {text}"
        seen = seen.__cause__ or seen.__context__
    return None


def _status_of(exc: BaseException) -> str:
    """The HTTP status of the reply whose body failed to parse (from the parser's frames)."""
    tb = exc.__traceback__
    while tb is not None:
        response = tb.tb_frame.f_locals.get("response")
        code = getattr(response, "status_code", None) or getattr(response, "status", None)
        if isinstance(code, int):
            return str(code)
        tb = tb.tb_next
    return "2xx"


async def _check_served(client: Any, settings: ClientSettings) -> None:
    import openai

    try:
        models = [m.id async for m in client.models.list()]
    except openai.OpenAIError as exc:
        raise _explain(exc, settings, "listing /v1/models") from exc
    if settings.served_name not in models:
        raise BenchforgeError(
            f"model.served_name={settings.served_name} is not served by {settings.base_url}; "
            f"it serves: {', '.join(models) or 'nothing'}"
        )


async def _complete(client: Any, settings: ClientSettings, request: Request) -> Completion:
    import openai

    common: dict[str, Any] = {"model": settings.served_name, "max_tokens": settings.max_tokens}
    if settings.sampling != "server":  # model.sampling=server: the server's own defaults apply
        common |= {
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "seed": settings.seed + request.sample_idx,  # distinct, reproducible per sample
        }
    if settings.stop:  # at most 4 are sent; the caller cuts every stop string client-side
        common["stop"] = sent_stops(settings.stop)
    if request.prompt.text is not None:
        path, body = "/completions", {**common, "prompt": request.prompt.text}
    else:
        path, body = "/chat/completions", {**common, "messages": request.prompt.as_messages()}
        if settings.chat_template_kwargs:
            body["chat_template_kwargs"] = settings.chat_template_kwargs
    started = time.monotonic()
    try:
        # The openai client's transport (auth, retries, timeouts, typed errors) with a plain
        # JSON body and reply: its typed-parameter transform and response models cost ~1 ms
        # of CPU per request, more than everything else on the client side together.
        data = await client.post(path, body=body, cast_to=object)
        choice = data["choices"][0]
        message = choice.get("message") or {}
        text = (choice.get("text") if request.prompt.text is not None
                else message.get("content")) or ""
        # vLLM's reasoning parsers: reasoning_content (older) or reasoning (newer)
        reasoning = message.get("reasoning_content") or message.get("reasoning") or ""
    except openai.OpenAIError as exc:
        raise _explain(exc, settings, f"generating {request.task_id}#{request.sample_idx}") from exc
    except ValueError as exc:  # a JSON content type whose body does not parse
        body = getattr(exc, "doc", "") or ""
        raise BenchforgeError(
            f"{settings.base_url}{path}: malformed reply for {request.task_id}#"
            f"{request.sample_idx}: HTTP {_status_of(exc)} with a body that is not JSON "
            f"({getattr(exc, 'msg', exc)}); first bytes: {body[:120]!r}") from None
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise BenchforgeError(f"{settings.base_url}{path}: malformed reply for "
                              f"{request.task_id}#{request.sample_idx} ({exc!r}): "
                              f"{str(data)[:200]}") from exc
    usage = data.get("usage") or {}
    details = usage.get("completion_tokens_details") or {}
    timings = data.get("timings") or {}  # llama-server's own measurements (milliseconds)
    return Completion(
        text=text,
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        latency_s=round(time.monotonic() - started, 4),
        reasoning=reasoning if isinstance(reasoning, str) else "",
        reasoning_tokens=details.get("reasoning_tokens") if isinstance(details, dict) else None,
        decode_s=(round(float(timings["predicted_ms"]) / 1000, 4)
                  if isinstance(timings, dict) and timings.get("predicted_ms") else None),
    )
