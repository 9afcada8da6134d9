"""The fine-scale half: networks, derivatives for the residual, collocation sampling."""
