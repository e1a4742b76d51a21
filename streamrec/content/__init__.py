"""Item content: text and image encoders, their fusion into one item embedding, the Redis
embedding cache and the nearest-neighbour index over the catalogue."""
