"""Attention blocks for YOLOv5 configs: each a small self-contained module, registered by name.

Every module in this package registers its blocks with :func:`models.registry.register`
when imported; `__all__` lists the public block classes.
"""

__all__: list[str] = []
