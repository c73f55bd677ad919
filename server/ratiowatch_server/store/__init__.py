"""The only place that knows SQL: reads and writes of runs, steps, metrics, sketches and alerts."""
