"""Adapters to other tools' conventions (landmarker, Fairlearn); each imports its tool lazily, if at all."""
