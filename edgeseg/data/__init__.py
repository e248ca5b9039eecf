"""Datasets (image/mask folders, NIfTI volumes), synthetic phantoms and transforms.

Importing ``edgeseg.data`` (and ``edgeseg.common.phantoms``) never imports torch; the torch wrappers live in
``edgeseg.data.torch_data``.
"""
