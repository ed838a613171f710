"""The console: rich tables of data, training, results, comparisons and exports, progress bars, PNG plots, and quiet
libraries."""
