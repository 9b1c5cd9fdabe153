"""float32 against bfloat16 for the default VGG-style CNN: training and MC-dropout prediction speed.

    .venv/bin/python benchmarks/precision_speed.py                  # 64 px, ~5 min on two cores
    .venv/bin/python benchmarks/precision_speed.py --repeats 1 --n-train 128 --n-predict 256  # a quick look

Both models are built by zoobot.model.network.build_model from the default ModelConfig (only
`precision` differs) and compiled by zoobot.model.train.compile_model, so they carry the real loss and
metrics. Training is `fit` on random images and vote counts in memory (images/s of its steady-state
epochs: the first epoch of the first repeat traces); prediction is `mc_predict` at T samples. The two
precisions alternate within every repeat, in rotated order, so load from elsewhere hits both alike.
Also printed: how far bfloat16's outputs are from float32's with the same (initial) weights, dropout off.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout

PRECISIONS = ("float32", "bfloat16")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--n-train", type=int, default=512, help="random galaxies per training epoch")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per training repeat")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--n-predict", type=int, default=1024, help="random galaxies per mc_predict call")
    parser.add_argument("--n-samples", type=int, default=30, help="MC-dropout samples T")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import keras
    import numpy as np

    from zoobot.bench import timing
    from zoobot.core.schema import GZ_DECALS
    from zoobot.model.network import ModelConfig, build_model
    from zoobot.model.sampling import deterministic_head_predict, mc_predict, split_trunk_head
    from zoobot.model.precision import detect_hardware, resolve_precision
    from zoobot.model.train import TrainConfig, compile_model

    rng = np.random.default_rng(args.seed)
    shape = (args.image_size, args.image_size, args.channels)
    x_train = rng.integers(0, 256, (args.n_train, *shape)).astype(np.float32)
    y_train = rng.integers(0, 40, (args.n_train, GZ_DECALS.n_answers)).astype(np.float32)
    x_predict = rng.integers(0, 256, (args.n_predict, *shape)).astype(np.float32)
    train_config = TrainConfig(shards="(random arrays)", batch_size=args.batch_size)

    models, trunk_heads = {}, {}
    for precision in PRECISIONS:
        keras.utils.set_random_seed(args.seed)  # the same initial weights for both
        model = build_model(ModelConfig(precision=precision), GZ_DECALS, shape)
        compile_model(model, train_config, ModelConfig(precision=precision), GZ_DECALS)
        models[precision], trunk_heads[precision] = model, split_trunk_head(model)
        mc_predict(model, x_predict[:8], 2, trunk_head=trunk_heads[precision])  # traces the predict functions

    # Accuracy, before training saturates the outputs at their bounds: the bfloat16 trunk with the
    # float32 model's weights, dropout off, against float32.
    models["bfloat16"].set_weights(models["float32"].get_weights())
    single = {p: deterministic_head_predict(trunk_heads[p][1], trunk_heads[p][0].predict_on_batch(x_predict[:256]))
              for p in PRECISIONS}
    relative = np.abs(single["bfloat16"] - single["float32"]) / single["float32"]

    def training(precision):
        def run():
            timer = timing.epoch_timer()
            with timing.quiet():
                models[precision].fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs,
                                      callbacks=[timer], verbose=0)
            return args.n_train / timing.steady_epoch(timer.durations)
        return run

    def predicting(precision):
        def run():
            seconds, _ = timing.seconds(mc_predict, models[precision], x_predict, args.n_samples,
                                        trunk_head=trunk_heads[precision])
            return args.n_predict / seconds
        return run

    variants = {f"{kind} {p}": make(p) for kind, make in (("train", training), ("mc_predict", predicting))
                for p in PRECISIONS}
    rates = timing.interleaved(variants, args.repeats)

    flags, gpus = detect_hardware()
    auto = resolve_precision("auto", "vgg", flags, gpus)
    print(f"VGG CNN {ModelConfig().filters} + dense {ModelConfig().dense_units}, {shape} images; CPU bf16 flags: "
          f"{sorted(flags & {'amx_bf16', 'avx512_bf16'}) or 'none'}; GPUs: {list(gpus) or 'none'}; auto -> {auto}")
    print(f"{'variant':<22}{'images/s (median)':>18}   each repeat")
    for name, values in rates.items():
        print(f"{name:<22}{statistics.median(values):>18.1f}   {', '.join(f'{v:.1f}' for v in values)}")
    summary = {}
    for kind in ("train", "mc_predict"):
        ratio = statistics.median(rates[f"{kind} bfloat16"]) / statistics.median(rates[f"{kind} float32"])
        per_repeat = [b / f for b, f in zip(rates[f"{kind} bfloat16"], rates[f"{kind} float32"])]
        summary[kind] = ratio
        print(f"{kind}: bfloat16 / float32 = {ratio:.2f}x (per repeat: {', '.join(f'{r:.2f}' for r in per_repeat)})")
    print(f"outputs, dropout off, same initial weights: median relative difference {np.median(relative):.2e}, "
          f"max {relative.max():.2e}")
    return summary


if __name__ == "__main__":
    main()
