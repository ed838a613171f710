"""The console: rich tables of data, training and results, progress bars, PNG plots, and quiet libraries."""
