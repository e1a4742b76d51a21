"""The work of the Faust agents: the micro-batch engine, its runner, the naive baseline."""
