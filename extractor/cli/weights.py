"""``alexfeat weights info|convert``: inspect weight sources and convert them to ``.weights.h5``."""

from __future__ import annotations

import json

import click


@click.group()
def weights() -> None:
    """Inspect and convert AlexNet weights (imagenet, .pth, caffe-layout .npz, .weights.h5)."""


@weights.command()
@click.argument("source")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(source: str, as_json: bool) -> None:
    """Show the architecture, layers, parameter count and sha256 of SOURCE."""
    from extractor.network.weights import resolve_weights

    resolved = resolve_weights(source)
    report = {
        "source": resolved.source,
        "arch": resolved.arch,
        "layers": {name: [list(k.shape), list(b.shape)] for name, (k, b) in resolved.tensors.items()},
        "has_classifier": resolved.has_fc,
        "parameters": resolved.param_count,
        "sha256": resolved.sha256,
    }
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"source:      {report['source']}")
    click.echo(f"arch:        {report['arch']}")
    click.echo(f"sha256:      {report['sha256']}")
    click.echo(f"parameters:  {report['parameters']:,}")
    click.echo(f"classifier:  {'yes (fc6, fc7, fc8)' if resolved.has_fc else 'no (conv1-conv5 only)'}")
    for name, (kernel, bias) in resolved.tensors.items():
        click.echo(f"  {name:<12} kernel {str(kernel.shape):<22} bias {bias.shape}")


@weights.command()
@click.argument("source")
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False), help="Target file; must end in .weights.h5."
)
def convert(source: str, output: str) -> None:
    """Convert SOURCE to an alexfeat .weights.h5 (keeps the source's sha256 for compatibility checks)."""
    from extractor.network.weights import convert_weights

    resolved = convert_weights(source, output)
    click.echo(f"wrote {output}: {resolved.arch}, {len(resolved.tensors)} layers, {resolved.param_count:,} parameters")
