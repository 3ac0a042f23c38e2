"""`expmatrix tokenizer ...`: fit a preset outside a matrix (a VQ-VAE pretraining), inspect a fitted artifact."""

from __future__ import annotations

from pathlib import Path

import click

from expmatrix.cli_common import RUNS, SET, friendly


@click.group()
def tokenizer() -> None:
    """Fit tokenizer presets outside a matrix and inspect fitted artifacts (VQ-VAE codebook health)."""


@tokenizer.command("fit")
@click.argument("preset")
@click.option("--data", "data_path", default="synthetic", show_default=True, help="A 4tops .h5 file, or synthetic.")
@click.option("--presets", default="tokenizers", show_default=True, type=click.Path(file_okay=False))
@click.option("--vect", type=click.Choice(["4", "5"]), default="4", show_default=True, help="4: (pT, eta, phi); 5: +E.")
@click.option("--met/--no-met", default=True, show_default=True, help="MET and MET-phi tokens.")
@click.option("--max-events", type=int, default=None, help="Cap on training events (as data.max_events).")
@SET
@RUNS
@friendly
def fit(preset, data_path, presets, vect, met, max_events, overrides, runs_root) -> None:
    """Fit PRESET (a name in --presets or a .yaml) on the training split of --data, as a job of that data
    selection would: the artifact goes to the same cache (runs/_cache/tokenizers/), so a later `run` of a
    matrix with the same preset, features and data reuses it. Prints the codebook health of a VQ-VAE."""
    from expmatrix.assembly.parts import Assembly
    from expmatrix.config import VECTORS, Job, JobConfig, Presets, parse_set, set_dotted, validate
    from expmatrix.datafiles import check_data_file
    from expmatrix.store import RunStore

    folder, name = (Path(preset).parent, Path(preset).stem) if preset.endswith((".yaml", ".yml")) else (presets, preset)
    raw = {"data": {"cont_features": VECTORS[vect], "use_met": met, "max_events": max_events}}
    raw["data"]["path"] = data_path if data_path == "synthetic" else str(Path(data_path).resolve())
    raw["tokenizer"] = Presets(folder).get(name, "tokenizer fit")
    for key, value in parse_set(overrides).items():
        set_dotted(raw, key, value)
    cfg = validate(JobConfig, raw, "tokenizer fit")
    store = RunStore(runs_root, "_tokenizer_fit")  # only its shared cache is used
    check_data_file(cfg.data, cfg.data.path, store)
    parts = Assembly(Job("tokenizer-fit", "", {}, cfg.seed, cfg, cfg.data.path), store)  # a job of that selection
    path = store.paths.cache.fit(parts.recipe.fit_key).artifact
    click.echo(_describe(parts.tokenizer.state_dict(), path))


@tokenizer.command("inspect")
@click.argument("artifact")
@click.option("--plots", default=None, type=click.Path(file_okay=False), help="[default: beside the artifact]")
@RUNS
@friendly
def inspect(artifact, plots, runs_root) -> None:
    """Print what ARTIFACT (a fitted tokenizer: a .json path, or its key in runs/_cache/tokenizers/) was fitted on,
    and for a VQ-VAE its codebook health; write reconstruction.png and codebook.png."""
    from expmatrix.paths import CachePaths
    from expmatrix.runfiles import read_object

    path = Path(artifact) if artifact.endswith(".json") else CachePaths.under(runs_root).fit(artifact).artifact
    if not path.exists():
        raise click.ClickException(f"{path}: no such fitted tokenizer (run `expmatrix tokenizer fit` or a matrix)")
    record = read_object(path, None, "signature")
    click.echo(f"preset and features: {record['signature']}\ndata: {record['data']}")
    click.echo(_describe(record["state"], path, Path(plots) if plots else None))


def _describe(state: dict, path: Path, plots: Path | None = None) -> str:
    """The artifact's path, and the health table and plots of a VQ-VAE's codebook."""
    health = (state.get("quantizer") or {}).get("health")
    if not health:
        return f"fitted: {path}"
    from expmatrix.tokenizers.vqvae.health import health_table, plot_health

    written = plot_health(health, plots or path.with_suffix(""))
    return f"{health_table(health)}\n\nfitted: {path}\nplots: {', '.join(map(str, written))}"
