"""The embedding job: what `zoobot embed` and `mlflow run -e embed` run.

Read top to bottom: load the model and the shards (or image folder), stream every galaxy's features
to disk, then, from that file, the nearest galaxies to a chosen one (a table and a montage of their
images) and a 2-D principal-component map, all logged to the step's run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from zoobot.model.embed import EmbedConfig, EmbedResult


@dataclass(frozen=True)
class EmbeddingOutcome:
    result: EmbedResult
    neighbours: object | None  # pandas.DataFrame: rank, id_str, distance; None without neighbours_of


def run_embedding(config: EmbedConfig, model_path, say: Callable[[str], None] = print) -> EmbeddingOutcome:
    from zoobot import tracking
    from zoobot.core import plots, similarity
    from zoobot.data.manifest import Manifest
    from zoobot.model.embed import catalog_values, embed, images_of, read_embedding
    from zoobot.model.network import load_bundle

    with tracking.step_run("embed", config):
        model, meta = load_bundle(model_path)
        manifest = Manifest.read(tracking.resolve_local(config.shards, "shards")) if config.shards else None
        if config.color_by:
            catalog_values(manifest, [], config.color_by)  # a wrong column fails now, not after the embedding
        result = embed(config, model, meta, manifest, progress=True)
        ids, features = read_embedding(result.features_path)
        figures, neighbours = {}, None
        if config.neighbours_of:
            neighbours = similarity.nearest_neighbours(ids, features, config.neighbours_of, config.k, config.metric)
            shown = [config.neighbours_of, *neighbours["id_str"]]
            images = images_of(shown, manifest, config.images or None, tuple(model.input_shape[1:]))
            labels = [f"query {config.neighbours_of}"[-14:]] + [
                f"{i[-6:]} d={d:.3f}" for i, d in zip(neighbours["id_str"], neighbours["distance"])]
            figures["neighbours.png"] = plots.image_grid(
                {"nearest": (labels, images)}, title=f"{config.neighbours_of} and its {len(neighbours)} nearest "
                                                      f"galaxies ({config.metric} distance)")
        if len(ids) >= 3:
            coordinates, variance = similarity.pca_map(features)
            values = catalog_values(manifest, ids, config.color_by) if config.color_by else None
            figures["embedding_map.png"] = plots.embedding_map(coordinates, variance, values, config.color_by)
        else:
            say(f"Only {len(ids)} galaxies: no 2-D map.")
        tracking.log_embedding(result, neighbours, figures)
    return EmbeddingOutcome(result, neighbours)

