"""The test-time scaling strategies, one module each; `strategies.registry` is the one place that names them."""
