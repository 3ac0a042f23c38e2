"""`expmatrix data ...`: make, convert, bin, compare and explore data files."""

from __future__ import annotations

from pathlib import Path

import click

from expmatrix.cli_common import friendly


@click.group()
def data() -> None:
    """Data tools."""


@data.command("synth")
@click.argument("source", type=click.Choice(["fourtops", "icecube"]))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The .h5 file to write.")
@click.option("--events", type=int, default=100_000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def synth(source: str, out: str, events: int, seed: int) -> None:
    """Write a synthetic data set in the exact layout of SOURCE (fourtops: 4tops_splitted.h5; icecube: pulses)."""
    from expmatrix.data import WRITERS

    click.echo(f"wrote {WRITERS[source, 'builtin'](out, events, seed)} ({events} events, seed {seed})")


@data.command("generate")
@click.argument("source", type=click.Choice(["fourtops", "icecube"]))
@click.option(
    "--generator",
    type=click.Choice(["pythia", "builtin", "long"]),
    default="pythia",
    show_default=True,
    help="pythia: Pythia 8 + FastJet (fourtops; the physics extra); builtin: the embedded generator (`data "
    "synth`); long: IceCube events with several pulses per sensor and a heavy-tailed length (ragged layout).",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The .h5 file to write.")
@click.option("--events", type=int, default=20_000, show_default=True, help="All splits together (80/10/10).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=int, default=None, help="Processes generating chunks [default: one per CPU].")
@click.option("--processes", default=None, help="Comma-separated, e.g. 4t,ttH [default: 4t,ttH,ttZ,tt].")
@click.option(
    "--detector",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="A YAML file overriding detector parameters (docs/data.md).",
)
@click.option(
    "--chunk",
    "chunk_size",
    type=int,
    default=500,
    show_default=True,
    help="Events per chunk: the unit of work and of resuming.",
)
@friendly
def generate(source, generator, out, events, seed, workers, processes, detector, chunk_size) -> None:
    """Generate SOURCE events into OUT: Pythia 8 with a FastJet detector emulation, seeded, in parallel chunks
    (a stopped run resumes from its finished chunks), or the built-in generator."""
    from expmatrix.data import WRITERS
    from expmatrix.data.pythia import check_output, load_detector, write_pythia

    if generator != "pythia" or source != "fourtops":
        if (source, generator) not in WRITERS:
            raise click.UsageError(f"--generator {generator} makes no {source} events")
        check_output(Path(out), events)
        click.echo(f"wrote {WRITERS[source, generator](out, events, seed)} ({events} events, seed {seed})")
        return
    names = [p.strip() for p in processes.split(",")] if processes is not None else None
    path = write_pythia(out, events, seed, workers=workers, processes=names,
                        detector=load_detector(detector), chunk_size=chunk_size)  # fmt: skip
    click.echo(f"wrote {path} ({events} events, seed {seed})")


@data.command("icecube-kaggle")
@click.argument("meta", type=click.Path(dir_okay=False))
@click.argument("geometry", type=click.Path(dir_okay=False))
@click.argument("batches", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The .h5 file to write.")
@click.option("--max-pulses", type=click.IntRange(min=1), default=None,
              help="Keep at most this many pulses per event (non-auxiliary first), padded layout; default: every "
              "pulse, ragged layout.")  # fmt: skip
@click.option("--fractions", default="0.8,0.1,0.1", show_default=True, help="Shares of train,val,test.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Of the split of the events.")
@friendly
def icecube_kaggle(meta, geometry, batches, out, max_pulses, fractions, seed) -> None:
    """The IceCube Kaggle data (META parquet, GEOMETRY csv, BATCH parquets) in the `icecube` pulse layout."""
    from expmatrix.data.icecube_kaggle import convert_kaggle

    try:
        shares = tuple(float(x) for x in fractions.split(","))
    except ValueError:
        message = f"{fractions!r}: expected three numbers, e.g. 0.8,0.1,0.1"
        raise click.BadParameter(message, param_hint="--fractions") from None
    r = convert_kaggle(meta, geometry, list(batches), out, max_pulses, shares, seed)
    events = ", ".join(f"{k} {v}" for k, v in r["events"].items())
    trimmed = f"{r['truncated']} had more than {max_pulses} pulses (trimmed)" if max_pulses else "every pulse (ragged)"
    click.echo(f"wrote {out}: {events} events; {trimmed}")


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _dataset_keys(pairs: tuple[str, ...]) -> dict[str, str]:
    """`--keys y_train=Y_train` -> every dataset name; an unknown name is an error listing the valid ones."""
    from pydantic import ValidationError

    from expmatrix.config import KeysConfig, SpecError

    try:
        return KeysConfig.model_validate(dict(p.split("=", 1) for p in pairs if "=" in p)).model_dump()
    except ValidationError as e:
        bad = e.errors()[0]["loc"][0]
        raise SpecError(f"--keys: {bad}: unknown; valid: {', '.join(KeysConfig.model_fields)}") from None


VECT = click.option(
    "--vect", type=click.Choice(["4", "5"]), default="4", show_default=True, help="4: (pT, eta, phi); 5: adds E."
)
PRESETS_DIR = click.option(
    "--presets", default="tokenizers", show_default=True, type=click.Path(file_okay=False), help="Preset folder."
)
FORMAT = click.option("--format", "fmt", type=click.Choice(["text", "markdown"]), default="text", show_default=True)


@data.command("bin")
@click.option("--input", "source", required=True, type=click.Path(exists=True, dir_okay=False), help="Raw 4tops .h5.")
@click.option("--output", required=True, type=click.Path(dir_okay=False), help="The binned .h5 to write.")
@click.option("--tokenizer", default="binned_ambre5", show_default=True, help="A joint binned preset name or .yaml.")
@PRESETS_DIR
@VECT
@click.option("--unit", type=click.Choice(["GeV", "MeV", "TeV"]), default="GeV", show_default=True)
@click.option("--background", default="2,3,4,5", show_default=True, help="Background process ids (for fit_on).")
@click.option("--keys", "keys", multiple=True, metavar="NAME=DATASET", help="Dataset names, e.g. y_train=Y_train.")
@click.option("--chunk-rows", type=int, default=1 << 15, show_default=True, help="Rows read at once (memory bound).")
@friendly
def data_bin(source, output, tokenizer, presets, vect, unit, background, keys, chunk_rows) -> None:
    """Write the binned data set (thesis layout: X_* as [N, 20] int64, labels, edges as attributes)."""
    from expmatrix.config import VECTORS, load_preset
    from expmatrix.tools.binfile import bin_file

    names = _dataset_keys(keys)
    config = load_preset(tokenizer, presets)
    report = bin_file(source, output, config, cont_features=VECTORS[vect], keys=names,
                      background=_ints(background), unit=unit, rows=chunk_rows)  # fmt: skip
    click.echo(f"wrote {output}: {report['rows']} rows, vocabulary {report['vocab_size']}")
    for split, counts in report["out_of_range"].items():
        outside = {f: n for f, n in counts.items() if n}
        if outside:
            click.echo(f"  {split}: entries outside the fitted range (put in the edge bins): {outside}")


@data.command("compare")
@click.argument("ours", type=click.Path(exists=True, dir_okay=False))
@click.argument("theirs", type=click.Path(exists=True, dir_okay=False))
@click.option("--their-keys", default=None, help="Their token datasets in row order, e.g. X (a combined split).")
@click.option("--our-splits", default=None, help="Our splits in row order, e.g. train,test [default: by row count].")
@click.option("--top", type=int, default=10, show_default=True, help="Rows of the frequency/disagreement tables.")
@FORMAT
@friendly
def data_compare(ours, theirs, their_keys, our_splits, top, fmt) -> None:
    """Token agreement of OURS (written by `data bin`) with THEIRS: overall, per position and feature."""
    from expmatrix.tools.compare import compare_files, render

    split = lambda text: text.split(",") if text else None  # noqa: E731
    comparison, tok = compare_files(ours, theirs, split(their_keys), split(our_splits))
    click.echo(render(comparison, tok, fmt, top))


@data.command("explore")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="train", show_default=True)
@click.option("--keys", "keys", multiple=True, metavar="NAME=DATASET", help="Dataset names, e.g. y_train=Y_train.")
@click.option("--max-events", type=int, default=100_000, show_default=True, help="Rows read (0: all).")
@click.option("--unit", type=click.Choice(["GeV", "MeV", "TeV"]), default="GeV", show_default=True)
@click.option("--plots", default=None, type=click.Path(file_okay=False), help="Folder for histogram PNGs.")
@click.option("--tokenizer", default=None, help="A preset name or .yaml: report the vocabulary it needs.")
@PRESETS_DIR
@VECT
@FORMAT
@friendly
def data_explore(file, split, keys, max_events, unit, plots, tokenizer, presets, vect, fmt) -> None:
    """Per-feature ranges, quantiles, invalid fractions, histograms of FILE; optionally a tokenizer's vocabulary."""
    from expmatrix.config import VECTORS, load_preset
    from expmatrix.tools.explore import explore, render

    names = _dataset_keys(keys)
    config = load_preset(tokenizer, presets) if tokenizer else None
    result = explore(file, names[f"x_{split}"], names[f"y_{split}"], unit=unit, max_events=max_events or None,
                     plots=plots, tokenizer=config, cont_features=VECTORS[vect], split=split)  # fmt: skip
    click.echo(render(result, fmt))
