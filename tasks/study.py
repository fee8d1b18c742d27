"""Study, delay, test: a forgetting experiment run on the model while it trains.

A human forgetting experiment studies items, lets time pass while other things happen, and tests
each item at its delay. The study protocol does the same with a task's library:

- ``StudyConfig.studied`` library bindings follow a schedule; the rest of the library recurs
  throughout training as usual (the task's normal recurring library);
- the studied bindings are split into ``cohorts``. Every binding of cohort ``c`` has its last
  exposure at step ``steps - delay_c``, with the delays log-spaced from ``min_delay`` to
  ``max_delay_share * steps``, so one test at the end of training sees every delay at once;
- within a cohort half of the bindings are **massed** (their ``exposures`` study steps are
  consecutive) and half **spaced** (``spacing`` steps apart), ending on the same step. An
  *exposure* is one training step in which the binding may fill library slots: on that step the
  library slots of every sequence draw from the recurring bindings plus the bindings being
  studied, each of these ``weight`` times over, so a studied binding fills about ``weight`` times
  the slots of a recurring one (a recurring binding is seen at every step; a studied one must be
  learned in a few);
- after its last exposure a binding is **retired**: it never appears in training again. Until its
  first exposure it has never appeared;
- ``held_out`` bindings are never shown at all: the tests' chance control, and the new items that
  relearning (``cram bench forgetting``'s savings) is compared with.

The test (``probe_set``) queries every studied and recurring binding *without its store in the
sequence*: the key comes back as a query, but the value it was bound to is not in the context, so
the answer must come from what training left in the weights (the readout, the semantic tier).
The delay of a test is the number of training steps since the binding's last exposure, and the
number of training sequences in those steps (the interference the binding lived through).

``presentation="cue-answer"`` shows a studied binding on its study steps without its store: the
query alone, labelled with the answer (paired-associate learning with feedback), so every model
must learn it in its weights from the error, whether or not it can attend.

A task meets the protocol with ``sample(batch_size, rng, library=pool, hide=patterns)`` (library
slots draw from ``pool`` only; the stores of ``hide``'s bindings are removed) and
``probe_set(patterns, n_sequences, seed)``; SRCD and the recall tasks do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from cram.core.errors import ConfigError
from cram.core.fields import check_fields, config_field

__all__ = ["StudyConfig", "StudySchedule", "StudiedTask", "studied"]

#: the schedule kinds of a binding in the per-binding table
MASSED, SPACED, RECURRING, HELD_OUT = "massed", "spaced", "recurring", "held-out"
#: a binding's phase at a test step
BEFORE, STUDY, RETIRED, NEVER = "before", "study", "retired", "never"
PROBE_TAG = 0x57D7


@dataclass(frozen=True)
class StudyConfig:
    """The study protocol (off unless ``protocol="study-test"``)."""

    protocol: Literal["off", "study-test"] = "off"
    presentation: Literal["cue-answer", "in-context"] = "cue-answer"  # how a study step shows a
    #   binding: its query alone with the answer as the label (no store: the weights must learn
    #   it from the error, as in paired-associate learning with feedback), or with its store
    #   before its query, as the task always shows the library (attention can answer it there)
    studied: int = config_field(48, min=2)  # library bindings that follow the schedule
    held_out: int = config_field(8, min=0)  # library bindings never shown in training: the
    #   tests' chance control, and the new items that relearning is compared with
    cohorts: int = config_field(8, min=1)  # delay groups (log-spaced delays at the last step)
    exposures: int = config_field(4, min=1)  # study steps per binding
    weight: int = config_field(6, min=1)  # on a study step a studied binding fills this many
    #   times the library slots of a recurring one
    spacing: int = config_field(20, min=1)  # steps between a spaced binding's exposures
    min_delay: int = config_field(10, min=1)  # shortest delay at the last step
    max_delay_share: float = config_field(0.5, gt=0, lt=1)  # longest delay, share of train.steps
    probes: int = config_field(96, min=1)  # test sequences drawn per test
    seed: int = config_field(0, min=0)  # which bindings are studied, and which are spaced

    def __post_init__(self) -> None:
        check_fields(self)

    @property
    def on(self) -> bool:
        """True when the protocol runs."""
        return self.protocol != "off"


class StudySchedule:
    """When each library binding is studied (see the module docstring); a pure function of config.

    Attributes (all numpy arrays over the ``n_library`` bindings): ``kind`` (massed, spaced,
    recurring), ``cohort`` (-1 for recurring), ``first`` and ``last`` exposure steps (-1 for
    recurring) and ``exposure_steps`` (a list of step arrays, empty for recurring).
    """

    def __init__(self, config: StudyConfig, n_library: int, steps: int,
                 per_sequence: int = 1):
        c = config
        recurring = n_library - c.studied - c.held_out
        if recurring < per_sequence:
            raise ConfigError(f"study.studied={c.studied} and study.held_out={c.held_out}: leave "
                              f"{recurring} recurring library bindings of {n_library}; a sequence "
                              f"holds up to {per_sequence} library bindings, so at least that "
                              "many must recur")
        if c.studied < 2 * c.cohorts:
            raise ConfigError(f"study.studied={c.studied}: fewer than two bindings (one massed, "
                              f"one spaced) per cohort for study.cohorts={c.cohorts}")
        self.config, self.n_library, self.steps = c, n_library, steps
        self.delays = self._delays(c, steps)  # (cohorts,) steps from last exposure to the end
        span = (c.exposures - 1) * c.spacing
        if steps - int(self.delays.max()) - span < 0:
            raise ConfigError(f"study: the longest delay ({int(self.delays.max())} steps) plus "
                              f"{c.exposures} exposures {c.spacing} steps apart do not fit in "
                              f"train.steps={steps}; lower study.max_delay_share or study.spacing")
        order = np.random.default_rng([c.seed, PROBE_TAG]).permutation(n_library)
        chosen = order[:c.studied]
        self.held_out = np.sort(order[c.studied:c.studied + c.held_out])  # never shown
        self.kind = np.full(n_library, RECURRING, dtype=object)
        self.kind[self.held_out] = HELD_OUT
        self.cohort = np.full(n_library, -1, np.int64)
        self.first = np.full(n_library, -1, np.int64)
        self.last = np.full(n_library, -1, np.int64)
        self.exposure_steps: list[np.ndarray] = [np.array([], np.int64)] * n_library
        for i, p in enumerate(chosen):
            cohort, spaced = i % c.cohorts, (i // c.cohorts) % 2 == 1
            last = steps - int(self.delays[cohort])
            gap = c.spacing if spaced else 1
            at = last - gap * np.arange(c.exposures)[::-1]  # (exposures,) increasing
            self.kind[p] = SPACED if spaced else MASSED
            self.cohort[p], self.first[p], self.last[p] = cohort, int(at[0]), last
            self.exposure_steps[p] = at
        self.recurring = np.flatnonzero(self.kind == RECURRING)  # (n_library - studied - held_out,)
        self.studied_patterns = np.flatnonzero(self.cohort >= 0)

    @staticmethod
    def _delays(c: StudyConfig, steps: int) -> np.ndarray:
        longest = max(c.min_delay, int(round(c.max_delay_share * steps)))
        delays = np.unique(np.round(np.geomspace(c.min_delay, longest, c.cohorts)).astype(int))
        if len(delays) < c.cohorts:
            raise ConfigError(f"study.cohorts={c.cohorts}: only {len(delays)} distinct delays "
                              f"fit between {c.min_delay} and {longest} steps")
        return delays

    def pool(self, step: int) -> np.ndarray:
        """Library bindings that may fill library slots at training ``step`` (sorted).

        A studied binding appears ``weight`` times.
        """
        active = [p for p in self.studied_patterns if step in self.exposure_steps[p]]
        studied = np.repeat(np.asarray(active, np.int64), self.config.weight)
        return np.sort(np.concatenate([self.recurring, studied]))

    def phase(self, step: int) -> np.ndarray:
        """(n_library,) phase at ``step``: before, study, retired, recurring or never (held out)."""
        out = np.full(self.n_library, RECURRING, dtype=object)
        out[self.held_out] = NEVER
        s = self.studied_patterns
        out[s] = np.where(step <= self.first[s], BEFORE,
                          np.where(step <= self.last[s], STUDY, RETIRED))
        return out

    def exposures_done(self, step: int) -> np.ndarray:
        """(n_library,) study steps completed before ``step`` (-1 recurring, 0 held out)."""
        out = np.full(self.n_library, -1, np.int64)
        out[self.held_out] = 0
        for p in self.studied_patterns:
            out[p] = int((self.exposure_steps[p] < step).sum())
        return out

    def table(self) -> list[dict]:
        """One row per studied binding: binding, kind, cohort, exposures, spacing, first, last."""
        c = self.config
        return [{"binding": int(p), "schedule": self.kind[p], "cohort": int(self.cohort[p]),
                 "exposures": c.exposures, "spacing": c.spacing if self.kind[p] == SPACED else 1,
                 "first_exposure": int(self.first[p]), "last_exposure": int(self.last[p])}
                for p in self.studied_patterns]


class StudiedTask:
    """A task whose library follows a :class:`StudySchedule` in training (every other hook as is).

    The trainer draws batch ``step`` with ``sample_at(step, n, rng)``; the wrapped task's library
    slots then draw from ``schedule.pool(step)``. ``test_set`` is the fixed test set: sequences in
    which every library binding's store is removed (``task.probe_set``).
    """

    def __init__(self, task: Any, schedule: StudySchedule):
        self.task, self.schedule = task, schedule

    def __getattr__(self, attr: str) -> Any:
        if attr in ("task", "schedule"):
            raise AttributeError(attr)
        return getattr(self.task, attr)

    def sample_at(self, step: int, batch_size: int, rng) -> Any:
        """Training batch ``step``: library slots from the bindings the schedule allows then."""
        hide = (self.schedule.studied_patterns
                if self.schedule.config.presentation == "cue-answer" else None)
        return self.task.sample(batch_size, rng, library=self.schedule.pool(step), hide=hide)

    def test_set(self, seed: int) -> Any:
        """The test sequences: every library binding queried with its store removed."""
        patterns = np.arange(self.schedule.n_library)
        return self.task.probe_set(patterns, self.schedule.config.probes, seed)


def studied(task: Any, config: StudyConfig, steps: int) -> Any:
    """``task`` under the study protocol when ``config`` turns it on, else ``task`` itself.

    Raises
    ------
    ConfigError
        When the task cannot take the protocol (no ``probe_set``) or the schedule does not fit.
    """
    if not config.on:
        return task
    if not getattr(task, "takes_study", False):
        raise ConfigError(f"study.protocol={config.protocol}: task {task.name!r} does not take "
                          "the study protocol (it needs sample(..., library=) and probe_set(); "
                          "SRCD and the recall tasks have them)")
    per_sequence = int(getattr(task, "library_slots_per_sequence", 1))
    return StudiedTask(task, StudySchedule(config, int(task.n_library), steps, per_sequence))
