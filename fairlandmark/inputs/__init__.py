"""Inputs: reading and validating predictions and metadata, radial errors in mm, groups and families."""
