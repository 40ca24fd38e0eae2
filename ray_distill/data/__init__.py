"""Data: benchmark files and the generated world."""
