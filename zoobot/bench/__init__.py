"""The benchmark: measured ratios against targets, one concern per module.

    benchmark    run_benchmarks, the whole run (and what the `benchmark` command imports)
    config       BenchmarkConfig (the command's options) and the Sizes it resolves to
    measurement  Measurement, one measured ratio against its target; SPECS, every figure's target
    timing       interleaved, rotated repetitions; epoch timing
    scratch      the real workflows' MLflow runs kept in a throwaway store, in a thread of their own
    data         simulated surveys, shards, images in memory
    speed        figures 1-4 and 6: prediction, acquisition, training (run_training), conversion
    memory       figure 5: predict's peak memory, in fresh processes
    science      figures 7-11: label efficiency (run_campaign), calibration, recovery, transfer (transfer.py)
    report       machine and versions, the JSON report, the table
"""
