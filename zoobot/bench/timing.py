"""How the benchmark times things on a shared, noisy machine: variants interleaved within each
repetition, in an order rotated between repetitions, and training timed by its steady-state epochs."""

from __future__ import annotations

import contextlib
import os
import statistics
import time


def seconds(function, *args, **kwargs) -> tuple[float, object]:
    """Wall time of one call, and what it returned."""
    start = time.perf_counter()
    out = function(*args, **kwargs)
    return time.perf_counter() - start, out


def rotated(items: list, repeat: int) -> list:
    """Each repetition starts with a different variant, so none always runs first (cold caches)
    or last."""
    shift = repeat % len(items)
    return items[shift:] + items[:shift]


@contextlib.contextmanager
def quiet():
    """Keras' per-epoch lines of the many training runs, out of the way of the table."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


def epoch_timer():
    """A Keras callback keeping the seconds of each epoch, validation and the callbacks before it
    in the list included (so put it last)."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.durations: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.durations.append(time.perf_counter() - self._start)

    return EpochTimer()


def steady_epoch(durations: list[float]) -> float:
    """The first epoch traces the training function; later ones are the steady state."""
    return statistics.median(durations[1:] if len(durations) > 1 else durations)


def interleaved(variants: dict, repeats: int) -> dict[str, list]:
    """variant name -> what each of its `repeats` calls returned; within each repetition every
    variant runs once, in an order rotated between repetitions, so that a burst of load from
    elsewhere hits them all alike."""
    results = {name: [] for name in variants}
    for repeat in range(repeats):
        for name in rotated(list(variants), repeat):
            results[name].append(variants[name]())
    return results
