"""uringtools: cat, cp and checksum tools whose I/O runs through io_uring.

The public API:

* :class:`uringtools.ring.Ring` and :class:`uringtools.ring.Arena`: the ring.
* :func:`uringtools.cat.cat_files`: GNU cat as a function.
* :class:`uringtools.stats.Stats`: the counters every pipeline fills.
"""

__version__ = "0.1.0"
