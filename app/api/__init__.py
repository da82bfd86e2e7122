"""REST blueprints, one module per resource."""
