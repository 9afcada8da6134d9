"""Training: the objective's terms, loss balancing, optimizers, the loop, the gradient check."""
