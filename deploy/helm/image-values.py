#!/usr/bin/env python3
"""Write the Helm values that put the workbench's images, by digest, into the chart.

    images/build.sh local | tail -n 4 > refs.env       # or the pipeline's references
    deploy/helm/image-values.py refs.env > images.yaml   # `-` or nothing: standard input
    helm upgrade --install ... -f deploy/helm/workbench-values.yaml -f images.yaml

The input is what the image build prints last: one `NAME=REFERENCE` a line (`hub=`, `proxy=`,
`cpu=`, `gpu=`; other lines are ignored), each reference `REPOSITORY@sha256:<64 hex>`. The
output sets `hub.image`, `proxy.chp.image` and `singleuser.image` (`--notebook cpu|gpu`).

The chart writes an image as `<name>:<tag>`, so a digest reference is split at its `:`: the name
is `REPOSITORY@sha256`, the tag the hex digest, and the chart renders the reference unchanged.
Exits 2 with a message naming what to fix when an image is missing or not pinned by digest.
"""

from __future__ import annotations

import argparse
import re
import sys

DIGEST_REF = re.compile(r"^(?P<repo>[a-z0-9][a-z0-9._:/-]*[a-z0-9])@sha256:(?P<hex>[0-9a-f]{64})$")
LINE = re.compile(r"^(?P<name>[a-z]+)=(?P<ref>\S+)$")
# (values path, which image) in the order they are written.
TARGETS = (("hub", "hub"), ("proxy.chp", "proxy"), ("singleuser", None))


class ImageValuesError(ValueError):
    """An image reference is missing or not by digest; the message says which and what to do."""


def read_refs(text: str) -> dict[str, str]:
    """`NAME=REFERENCE` lines of `text` as a dict (the last line of a name wins)."""
    refs = {}
    for line in text.splitlines():
        match = LINE.match(line.strip())
        if match:
            refs[match["name"]] = match["ref"]
    return refs


def split_digest_ref(ref: str, what: str) -> dict[str, str]:
    """`repo@sha256:hex` as the chart's `{name, tag}`; raises ImageValuesError otherwise."""
    match = DIGEST_REF.match(ref)
    if not match:
        raise ImageValuesError(
            f"{what} image {ref!r} is not pinned by digest; give REPOSITORY@sha256:<64 hex> "
            "(the reference the image build prints last)")
    return {"name": f"{match['repo']}@sha256", "tag": match["hex"]}


def image_values(refs: dict[str, str], notebook: str) -> dict[str, dict[str, str]]:
    """{values path: {name, tag}} for the hub, the proxy and the notebook image `notebook`."""
    out = {}
    for path, image in TARGETS:
        image = image or notebook
        if image not in refs:
            raise ImageValuesError(
                f"no {image}= line in the input; it needs hub=, proxy= and {notebook}= lines "
                "(the last lines the image build prints)")
        out[path] = split_digest_ref(refs[image], image)
    return out


def to_yaml(values: dict[str, dict[str, str]]) -> str:
    lines = ["# Written by deploy/helm/image-values.py: the workbench's images, by digest."]
    for path, image in values.items():
        keys = path.split(".")
        for depth, key in enumerate(keys):
            lines.append(f"{'  ' * depth}{key}:")
        indent = "  " * len(keys)
        lines.append(f"{indent}image:")
        lines.append(f'{indent}  name: "{image["name"]}"')
        lines.append(f'{indent}  tag: "{image["tag"]}"')
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("refs", nargs="?", default="-",
                        help="file of NAME=REFERENCE lines (default: standard input)")
    parser.add_argument("--notebook", choices=("cpu", "gpu"), default="cpu",
                        help="which notebook image is the chart's default (default: cpu)")
    args = parser.parse_args(argv)
    try:
        if args.refs == "-":
            text = sys.stdin.read()
        else:
            with open(args.refs, encoding="utf-8") as handle:
                text = handle.read()
        sys.stdout.write(to_yaml(image_values(read_refs(text), args.notebook)))
    except (ImageValuesError, OSError) as err:
        print(f"image-values: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
