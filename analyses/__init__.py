"""Batteries, tables, plots and reports built from the tidy results of models/ and probes/."""
