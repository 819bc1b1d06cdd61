"""HTTP layer: route access declarations, middlewares, problem+json errors, views."""
