"""The embedded market simulator: a real implementation of the feed (and later broker) interfaces."""
