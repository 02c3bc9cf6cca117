"""The MNS queue: the source the consumer reads, dead letters, queue administration."""
