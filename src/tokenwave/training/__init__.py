"""Training of the codec families: recipes, data, generator/discriminator steps, the loop and its checkpoints."""
