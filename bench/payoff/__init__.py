"""The pay-off experiment: does training on zcurate's manifests beat training on the raw pool?

``pool`` builds a noisy pool with known truth and a clean evaluation set from openclipart;
``arms`` makes each arm's manifest (raw, random subset, curated, curated with the feedback loop);
``experiment`` trains every arm for every seed at equal compute and scores it on the evaluation set;
``report`` writes the results JSON, the plots and the sample grid. One command runs it all:
``python bench/bench_payoff.py`` (docs/payoff.md).
"""
