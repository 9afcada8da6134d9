"""The coarse scale: the distributed coarse mesh whose subdomains shard the collocation points."""
