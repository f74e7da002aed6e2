"""One router per resource; ``he_agg.server.app`` only includes them."""
