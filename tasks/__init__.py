"""The synthetic smartwatch world: rendering, sampling, task formats, splits and scoring."""
