"""`expmatrix export JOB_DIR --onnx FILE`: a finished job's model for other frameworks."""

from __future__ import annotations

import click

from expmatrix.cli_common import friendly


@click.command()
@click.argument("job_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--onnx", "onnx_file", required=True, type=click.Path(dir_okay=False), help="The .onnx file to write.")
@friendly
def export(job_dir: str, onnx_file: str) -> None:
    """Export the evaluated weights of the finished job in JOB_DIR (runs/<experiment>/<job-id>) as ONNX, with
    the tokenizer's fitted state beside it (FILE without .onnx + .tokenizer.json); batch and sequence length
    are dynamic. onnxruntime's outputs are checked against torch's on the job's test events. Needs the
    `onnx` extra (pip install 'expmatrix[onnx]')."""
    from expmatrix.onnx_export import export_job

    out = export_job(job_dir, onnx_file)
    diffs = ", ".join(f"{k} {v:.2e}" for k, v in out["max_abs_diff"].items())
    click.echo(f"job {out['job']}: wrote {out['onnx']} and {out['tokenizer']}")
    click.echo(f"onnxruntime vs torch on {out['events']} test events: max abs difference {diffs}")
