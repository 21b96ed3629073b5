"""Tests of the benchmark code itself: the one place tests import `bench` (see docs/testing.md)."""
