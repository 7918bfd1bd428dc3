"""Command-line tools on top of everything: python -m tools.report, tools.demo, tools.bench,
tools.bench_data, tools.fake_data."""
