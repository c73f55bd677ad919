"""Alert rules, their pure detectors, and the engine that runs them over newly ingested steps."""
