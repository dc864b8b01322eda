"""napari plugin: open a review folder (``pseudocell suggest``), walk its tiles, mark
cells and non-cells, save the answers for ``pseudocell ingest``.

The logic lives in :mod:`.queue` (no Qt); :mod:`._reader`, :mod:`._writer` and
:mod:`._widget` are the thin napari side, found through ``napari.yaml`` (npe2). Install
with ``pip install 'pseudocell[napari]'``; the command line never imports this package.
"""
