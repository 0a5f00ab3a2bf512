"""Where a pretrained model, tokenizer or processor comes from: a local directory or a hub name.

Every `from_pretrained` of the package goes through `pretrained_source`, so a mistyped local path fails
at once naming its config key and the file it lacks, instead of being sent to the hub as a model name.
"""

from __future__ import annotations

from pathlib import Path


def looks_local(name_or_path: str) -> bool:
    """A path (`/…`, `./…`, `~/…` or an existing file or directory) rather than a hub name."""
    return name_or_path.startswith((".", "/", "~")) or Path(name_or_path).exists()


def pretrained_source(name_or_path: str, key: str, required: str | None = "config.json",
                      what: str = "pretrained model", fix: str | None = None) -> str:
    """`name_or_path` for `from_pretrained`: a hub name as given, a local directory expanded (`~`) and
    checked to hold the file `required` (to exist, when None). Errors name `key`, `what` is missing and `fix`."""
    name_or_path = str(name_or_path)
    if not looks_local(name_or_path):
        return name_or_path
    path = Path(name_or_path).expanduser()
    if required is None and not path.is_dir():
        raise FileNotFoundError(f"{key}: pretrained directory not found: {name_or_path}")
    if required is not None and not (path / required).is_file():
        raise FileNotFoundError(f"{key}: no {what} ({required}) in {name_or_path}; "
                                f"{fix or f'set {key} to a model directory or a Hugging Face name'}")
    return str(path)
