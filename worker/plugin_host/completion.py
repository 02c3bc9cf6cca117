"""The completion step of a lifecycle-hook event: runs after the event's other plugins.

ESS holds an instance in a scaling activity until its lifecycle action is completed, and
that must happen only once every plugin taking the hook is done (docs/plugins.md,
"Lifecycle hooks"). So for a `LifecycleHook:*` event the dispatcher, once every
`on_lifecycle_hook` implementation called for this delivery has answered (returned
futures resolved), calls each `complete_lifecycle_action(event, result, ctx)` with their
combined `Result`; each answer joins the event's outcome like any hook's. It runs on a
thread of its own when the plugins answered through futures, so it never holds a
plugin's callback thread (e.g. the `slb` sender that resolved the last future).
"""
from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any, Callable, Mapping

from .call_result import status_of
from .outcomes import FAILED, PluginResult, combine
from ..text import one_line

COMPLETE_HOOK = "complete_lifecycle_action"


def complete_after(dispatcher: Any, event: Any, results: list[PluginResult], contexts: dict,
                   resume: Mapping[str, Any] | None, done: Callable[[], None], hop: bool) -> None:
    """Call the completion hooks with the plugins' combined result, add their results to
    `results` (and their contexts to `contexts`), then call `done`."""
    if not hop:
        return _complete(dispatcher, event, results, contexts, resume, done)
    threading.Thread(target=_complete, args=(dispatcher, event, results, contexts, resume, done),
                     name="lifecycle-complete", daemon=True).start()


def _complete(dispatcher: Any, event: Any, results: list[PluginResult], contexts: dict,
              resume: Mapping[str, Any] | None, done: Callable[[], None]) -> None:
    try:
        so_far = combine(event, [dispatcher.deferred_result(contexts[r.plugin], r) for r in results], [])
        for impl in dispatcher.impls(COMPLETE_HOOK):
            name = dispatcher.pm.get_name(impl.plugin)
            if resume is not None and name not in resume:
                continue  # completed on an earlier delivery; only the plugins still working return
            ctx = contexts.get(name) or dispatcher.context_for(name, event, resume)
            contexts[name] = ctx
            status = dispatcher.call(impl, name, COMPLETE_HOOK, event, ctx, result=so_far)
            if isinstance(status, Future):  # the step is synchronous: wait, within the call limit
                status = _wait(name, status, dispatcher.call_timeout)
            results.append(status)
    except BaseException as exc:  # never leave the event unsettled
        results.append(PluginResult("worker", FAILED, f"completion step: {one_line(exc)}"))
    done()


def _wait(name: str, fut: Future, timeout: float) -> PluginResult:
    try:
        value = fut.result(timeout or None)
    except BaseException as exc:
        return PluginResult(name, FAILED, one_line(exc))
    return status_of(name, value)
