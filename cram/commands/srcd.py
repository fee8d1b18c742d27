"""``cram srcd``: look at the SRCD benchmark data before training on it.

Sub-verbs:

- ``describe``: measured statistics of generated sequences (query fraction, library share, gap and
  lag quantiles, ...) next to the parameters that should produce them;
- ``sample``: a small text view of one sequence (its events, keys, values and a sketch of the
  signal);
- ``speed``: generation time per batch against one training step at the presets' sizes
  ("generation must never be the bottleneck").

The data config is the preset's ``data`` section (``--preset``, default ``paper``: the paper's
N=2048 construction), changed by ``--set field=value`` on SRCDConfig fields (``data.`` prefix
optional).
"""

from __future__ import annotations

import argparse

from cram.commands._util import add_set_argument, emit_json, log, non_negative_int

DEFAULT_PRESET = "paper"


def register(sub) -> None:
    """Add ``cram srcd`` and its actions to the CLI's subparsers."""
    p = sub.add_parser("srcd", help="the SRCD benchmark data: statistics, samples, timing",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ssub = p.add_subparsers(dest="srcd", metavar="ACTION")
    ssub.required = True

    d = ssub.add_parser("describe", help="measured statistics of generated SRCD data",
                        description="Generate SAMPLES sequences and print what they measure: "
                                    "length, query_fraction, library_share, gap_quantiles, "
                                    "lag_quantiles, signal_std, attention_floor, generation time.",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _data_arguments(d)
    d.add_argument("--samples", type=int, default=64, help="sequences to generate")
    d.add_argument("--json", action="store_true", help="print one JSON document")
    d.set_defaults(func=_describe)

    s = ssub.add_parser("sample", help="a text view of one SRCD sequence",
                        description="Print the events of one sequence (position, time, event, key, "
                                    "library or novel, value, lag) and a sketch of its signal.",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _data_arguments(s)
    s.add_argument("--length", type=int, default=None,
                   help="sequence length (default: the preset's)")
    s.add_argument("--json", action="store_true",
                   help="print the sequence's arrays as one JSON document")
    s.set_defaults(func=_sample)

    t = ssub.add_parser("speed", help="generation time per batch against one training step",
                        description="For each preset: ms to generate one training batch (the "
                                    "preset's length and batch size) and ms for one soft-mode "
                                    "training step of MODEL (forward, loss, backward, AdamW) at "
                                    "the same size, on the current torch threads.",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--presets", default="demo,paper", help="comma-separated preset names")
    t.add_argument("--model", default="cram", help="model whose training step is timed")
    t.add_argument("--repeats", type=int, default=3, help="timed repetitions (median reported)")
    t.add_argument("--threads", type=int, default=1, help="torch threads")
    t.add_argument("--seed", type=non_negative_int, default=0)
    t.add_argument("--json", action="store_true")
    t.add_argument("--record", action="store_true",
                   help="also write the table as a result file (into --results)")
    t.add_argument("--results", default=None, metavar="DIR",
                   help="results folder for --record (given alone, it implies --record; "
                        "default $CRAM_RESULTS_DIR, else ./results)")
    t.set_defaults(func=_speed)


def _data_arguments(p) -> None:
    p.add_argument("--preset", default=DEFAULT_PRESET,
                   help="preset whose data section is used (cpu-tiny, demo, cpu, paper, "
                        "demo-labelled, cpu-labelled, paper-labelled)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of the generated sequences")
    add_set_argument(p)


def data_config(preset: str, overrides: list[str]):
    """The preset's SRCDConfig with ``--set`` overrides applied (``data.`` prefix optional)."""
    from cram.consolidation.config import get_preset
    from cram.core.overrides import apply_overrides

    config = get_preset(preset).data
    return apply_overrides(config, [o.removeprefix("data.") for o in overrides])


def _positive(name: str, value: int) -> None:
    from cram.core.errors import ConfigError

    if value < 1:
        raise ConfigError(f"--{name}={value}: must be an integer >= 1")


# ---------------------------------------------------------------------------------------- describe
def _describe(args) -> int:
    from cram.tasks.srcd_stats import expected_statistics
    from cram.tasks.srcd_stream import describe

    _positive("samples", args.samples)
    config = data_config(args.preset, args.overrides)
    stats = describe(config, samples=args.samples, seed=args.seed)
    stats["expected"] = expected_statistics(config)
    stats["preset"] = args.preset
    if args.json:
        emit_json(stats)
    else:
        print(format_description(stats))
    return 0


def format_description(stats: dict) -> str:
    """The ``describe`` table: each statistic measured and as the parameters imply."""
    exp = stats["expected"]
    rows = [("length", stats["length"], ""), ("samples", stats["samples"], "")]
    for key in ("query_fraction", "store_fraction", "library_share", "attention_floor"):
        rows.append((key, stats[key], exp[key]))
    for q, v in stats["gap_quantiles"].items():
        rows.append((f"gap q{q}", v, exp["gap_quantiles"][q]))
    for q, v in stats["lag_quantiles"].items():
        rows.append((f"lag q{q}", v, ""))
    rows.append(("signal_std", stats["signal_std"], 1.0))
    rows.append(("generation ms/sequence", stats["generation_ms_per_sequence"], ""))

    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    width = max(len(r[0]) for r in rows)
    lines = [f"SRCD (preset {stats['preset']}), measured vs expected from the parameters",
             f"{'statistic':<{width}}  {'measured':>10}  {'expected':>10}",
             "-" * (width + 24)]
    lines += [f"{name:<{width}}  {fmt(m):>10}  {fmt(e):>10}" for name, m, e in rows]
    cfg = stats["config"]
    lines.append("")
    lines.append("config: " + ", ".join(f"{k}={v}" for k, v in cfg.items()))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- sample
def _sample(args) -> int:
    import dataclasses

    from cram.tasks.srcd_stream import SRCD

    config = data_config(args.preset, args.overrides)
    if args.length is not None:
        _positive("length", args.length)
        from cram.core.errors import ConfigError

        try:
            config = dataclasses.replace(config, length=args.length)
        except ConfigError as err:
            raise ConfigError(f"--length {args.length}: {err}") from None
    gen = SRCD(config)
    seq = gen.sample(1, seed=args.seed).slice(0, 1)
    if args.json:
        arrays = {f.name: (None if getattr(seq, f.name) is None else getattr(seq, f.name)[0])
                  for f in dataclasses.fields(seq)}
        emit_json({"config": dataclasses.asdict(config), "seed": args.seed, **arrays})
    else:
        print(format_sequence(seq, config))
    return 0


def format_sequence(seq, config, width: int = 72) -> str:
    """Text view of one sequence (``seq`` holds one row)."""
    import numpy as np

    from cram.tasks.srcd_stream import EVENT_QUERY, EVENT_STORE

    event, key, value_in = seq.event[0], seq.key[0], seq.value_in[0]
    tau = np.cumsum(seq.dtau[0])
    query_pos = np.flatnonzero(event == EVENT_QUERY)
    store_of = {int(p - seq.lag[0][p] - 1): int(p) for p in query_pos}  # store position → query
    lines = [(f"SRCD sequence: length {config.length}, {len(query_pos)} bindings, "
              f"key encoding {config.key_encoding}, elapsed time {tau[-1]:.2f}"),
             f"signal  {_sparkline(seq.signal[0], width)}",
             "",
             f"{'pos':>5} {'time':>8}  {'event':<6} {'key':>6} {'kind':<8} {'value':>5}  note"]
    for p in np.flatnonzero(event != 0):
        kind_lib = bool(seq.is_library[0][store_of.get(int(p), int(p))])
        kind = "library" if kind_lib else "novel"
        k = str(int(key[p])) if config.key_encoding == "id" else "vec"
        if event[p] == EVENT_STORE:
            v, note = str(int(value_in[p]) - 1), f"queried at {store_of.get(int(p), '?')}"
        else:
            v = str(int(seq.answer[0][p]))
            note = f"answer; stored at {p - seq.lag[0][p] - 1}, lag {seq.lag[0][p]}"
            if kind_lib:
                note += f", pattern {seq.pattern[0][p]}"
        name = "store" if event[p] == EVENT_STORE else "query"
        lines.append(f"{p:>5} {tau[p]:>8.2f}  {name:<6} {k:>6} {kind:<8} {v:>5}  {note}")
    return "\n".join(lines)


def _sparkline(x, width: int) -> str:
    import numpy as np

    blocks = " ▁▂▃▄▅▆▇█"
    chunks = np.array_split(np.asarray(x, float), min(width, len(x)))
    means = np.array([c.mean() for c in chunks])
    lo, hi = means.min(), means.max()
    if hi == lo:
        idx = np.zeros(len(means), int)
    else:
        idx = np.round((means - lo) / (hi - lo) * 8).astype(int)
    return "".join(blocks[i] for i in idx)


# ---------------------------------------------------------------------------------------- speed
def _speed(args) -> int:
    _positive("repeats", args.repeats)
    _positive("threads", args.threads)
    if args.record or args.results is not None:  # a bad folder fails before the timing
        from cram.core.results import check_results_dir, default_results_dir

        check_results_dir(args.results or default_results_dir())
    from cram.experiments.timing import srcd_speed_table

    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    rows = srcd_speed_table(presets, args.model, repeats=args.repeats, threads=args.threads,
                            seed=args.seed)
    if args.record or args.results is not None:
        from cram.core.benchlog import record_benchmark
        from cram.core.results import study_id

        title = "SRCD generation vs one training step"
        notes = ("Median of the timed repeats after one warm-up; gen/step is the share of a step "
                 "that generation would add if it ran in the same thread.")
        path = record_benchmark(study_id(title), title, rows, notes=notes, results=args.results,
                                seeds=[args.seed], extra={"threads": args.threads})
        log(f"result file: {path}")
    if args.json:
        emit_json({"rows": rows})
    else:
        from cram.core.benchlog import markdown_table

        print(markdown_table(rows), end="")
    return 0
