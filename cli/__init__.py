"""The ``zcurate`` command line (``cli.main.app``): a layer above ``engine``, ``pipelines`` and ``api``."""
