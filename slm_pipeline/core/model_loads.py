"""One model load at a time in a process, and transformers' process-wide switches checked before each.

While `from_pretrained` builds a model, transformers turns weight tying and initialisation off for the
whole process: `transformers/initialization.py` replaces `PreTrainedModel.tie_weights`,
`PreTrainedModel.init_weights` and the `torch.nn.init` functions with empty ones
(`no_tie_weights`, `no_init_weights`) and puts back, on the way out, what it found on the way in.
Two loads in two threads interleave like this:

    thread A saves the real tie_weights, installs the empty one
    thread B saves the empty one (!),   installs the empty one
    thread A puts back the real one
    thread B puts back the empty one    -> from now on no model in this process ties its weights

After that, every model with tied embeddings (SmolLM2, the test's tiny Llama) loads with `lm_head.weight`
MISSING and left on the meta device ("Cannot copy out of meta tensor"), and any model built from a config
keeps uninitialised weights. It happens in long-lived processes that load models from several threads:
the gateway's assigner loading its embedding model on two concurrent first requests, the SLM server,
and a test session that runs a server in a thread while it loads a model itself. The faster the loads
(a converted model already in the cache), the likelier the overlap.

`exclusive()` serialises every model load this project does, and first puts back the genuine functions
should something else in the process have left them replaced (logged as a warning).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)
_LOCK = threading.RLock()
_GENUINE: dict[str, Any] = {}


def _is_genuine(function: Any, owner: str) -> bool:
    return getattr(function, "__qualname__", "").startswith(owner + ".")


def repair_transformers_switches() -> list[str]:
    """Put back transformers' and torch's functions that a load interrupted by another thread left replaced.

    Returns what was repaired (empty when all was well)."""
    import torch
    from transformers import initialization
    from transformers.modeling_utils import PreTrainedModel

    repaired = []
    for name in ("tie_weights", "init_weights"):
        current = getattr(PreTrainedModel, name)
        if _is_genuine(current, "PreTrainedModel"):
            _GENUINE.setdefault(name, current)
        elif name in _GENUINE:
            setattr(PreTrainedModel, name, _GENUINE[name])
            repaired.append(f"PreTrainedModel.{name}")
        else:
            raise RuntimeError(f"transformers' PreTrainedModel.{name} was replaced by {current!r} before this "
                               "process loaded its first model (a concurrent from_pretrained in another thread); "
                               "restart the process")
    for name, genuine in initialization.TORCH_INIT_FUNCTIONS.items():  # transformers keeps the real ones here
        if getattr(torch.nn.init, name, genuine) is not genuine:
            setattr(torch.nn.init, name, genuine)
            repaired.append(f"torch.nn.init.{name}")
    if repaired:
        log.warning("a model load in another thread left %s replaced (transformers patches them for the whole "
                    "process while it loads); put back the genuine functions", ", ".join(repaired))
    return repaired


@contextlib.contextmanager
def exclusive() -> Iterator[None]:
    """Hold the process's model-loading lock, with transformers' switches in their genuine state."""
    with _LOCK:
        repair_transformers_switches()
        yield
