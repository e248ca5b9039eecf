"""Torch-free helpers that every part of edgeseg shares: the one place the device side may import from.

``edgeseg.common`` depends on the standard library and numpy only, and on no other part of edgeseg, so
``edgeseg.runtimes`` and ``edgeseg.apps`` use it without reaching into the training core:

- :mod:`edgeseg.common.io`: atomic writes, sha256, writable-folder checks;
- :mod:`edgeseg.common.errors`: the one-line text of an exception;
- :mod:`edgeseg.common.deps`: optional dependencies and the extra that installs each;
- :mod:`edgeseg.common.phantoms`: synthetic polyp images, masks and sequences (numpy).
"""
