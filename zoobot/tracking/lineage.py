"""Dataset lineage: which galaxies a run read, as MLflow dataset inputs the UI links across runs.

`convert` logs every split it wrote; `train` and `finetune` log the splits they learn and validate on,
`evaluate` the split it scores, and each active-learning iteration its labelled set and pool. A split's
digest is made from the sha256 of its shard files (which the manifest holds), so the `train` split that
a training run read has the digest its `convert` run logged: in the UI, the run's Datasets name the
very shards, and the runs that share them.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import mlflow
import pandas as pd

# a step's role for a split: MLflow's dataset input context
CONTEXTS = {"train": "training", "validation": "validation", "test": "evaluation"}


def split_digest(manifest, split: str) -> str:
    """16 hex digits from the split's shard files' sha256, in order: the same shards, the same digest."""
    files = manifest.splits[split].files
    return hashlib.sha256("".join(f.sha256 for f in files).encode()).hexdigest()[:16]


def split_name(manifest, split: str) -> str:
    """'<catalog file stem>/<split>', e.g. 'catalog/train': what the UI lists."""
    stem = Path(manifest.catalog.get("path", "shards")).name.split(".")[0] or "shards"
    return f"{stem}/{split}"


def _index(manifest) -> pd.DataFrame | None:
    """The shards' galaxies.csv (ids, splits and sky positions), or None when the shards have none."""
    index = Path(manifest.root) / "galaxies.csv" if manifest.root is not None else None
    if index is None or not index.is_file():
        return None
    table = pd.read_csv(index, dtype={"id_str": str})
    return table[[c for c in ("id_str", "split", "ra", "dec") if c in table.columns]]


def _galaxies(index: pd.DataFrame | None, manifest, split: str) -> pd.DataFrame:
    """The split's rows of the galaxies index, or its count alone."""
    if index is not None:
        return index.loc[index["split"] == split].reset_index(drop=True)
    return pd.DataFrame({"split": [split] * manifest.splits[split].count})


def _log(frame: pd.DataFrame, source: str, name: str, digest: str, context: str) -> None:
    with warnings.catch_warnings():
        # a local path is "interpretable in multiple ways" and int columns draw a schema hint: noise here
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(frame, source=source, name=name, digest=digest)
        mlflow.log_input(dataset, context=context)


def log_splits(manifest, contexts: dict[str, str]) -> None:
    """Log each split of `contexts` (split -> context) that the shards have, on the active run."""
    wanted = {split: context for split, context in contexts.items()
              if split in manifest.splits and manifest.splits[split].count}
    index = _index(manifest) if wanted else None  # read once for every split
    for split, context in wanted.items():
        _log(_galaxies(index, manifest, split), str(manifest.root), split_name(manifest, split),
             split_digest(manifest, split), context)


def log_labelled_set(manifest, ids, labels, context: str, what: str) -> None:
    """A campaign's labelled set or pool at one iteration (it changes as galaxies move): digest of its
    ids and labels."""
    ids = [str(i) for i in ids]
    digest = hashlib.sha256(("\n".join(ids) + "|" + (repr(labels.tolist()) if labels is not None else ""))
                            .encode()).hexdigest()[:16]
    _log(pd.DataFrame({"id_str": ids}), str(manifest.root), f"{split_name(manifest, what)}", digest, context)
