"""Offline evaluation: benchmark datasets and rosbags, mIoU / PQ metrics, reports, bag -> bag.

Modules: ``metrics`` (accumulating torchmetrics metrics), ``datasets`` (benchmark
layouts), ``bags`` (rosbag2 reading/writing with rosbags), ``state`` (per-shard
saved states that merge exactly), ``runner`` (the evaluation loop), ``report``
(markdown / HTML / plots), ``bag_infer`` (bag -> bag), ``multi_bag`` (many bags),
``bag_sources`` (bag ground truth, PQ on bags), ``distributed`` (torchrun ranks),
``preflight`` (cheap checks before the engine), ``cli`` (``ovseg-eval``, a module per subcommand).
"""
