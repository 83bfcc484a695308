"""Built-in credential backends, each a pluggy plugin (installed as ``arda_amazon_bp.backends``)."""
