"""Speed benchmarks, apart from the parts a learner reads: `python -m bench --help`."""
