"""The consumer: receive, admit, hand to the pool, keep hidden, settle; crash journals, signals."""
